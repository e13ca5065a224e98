//! The C4 pipeline of [`run_clean`](super::run_clean) as map/reduce stages
//! with files between them (the datatrove / CCNet pattern), so that a
//! batch scheduler's array jobs can run it over many machines, with no
//! coordinator: every task reads the run's plan and the files of the stages
//! before it, writes its own outputs, and last a completion marker.
//!
//! With `N` tasks over the input files (contiguous ranges, in input order)
//! and `R` hash buckets:
//!
//! | stage | tasks | reads | writes |
//! |---|---|---|---|
//! | `extract` | N | its input files | each file's cleaned pages (`extract/FILE.spill`); its URL candidates, by bucket |
//! | `urls` | R | the URL candidates of its bucket | the newest page per URL (ties: the first in input order), by extract task |
//! | `lines` | N | its spills, the URL winners | the line keys of its winning pages with the smallest md5(url) per key, by bucket |
//! | `owners` | R | the line keys of its bucket | the owner of each line key, by task |
//! | `finalize` | N | its spills, winners and owners | each file's kept pages after line dedup, language ID and bad words |
//! | `write` | N | every file's kept-page count, the pages of its shards | shards `part-K` with `K mod N` = task; the last task also `manifest.json` |
//!
//! tfds's order is kept (URL dedup, `clean_page`, line dedup, then language
//! ID), keys are full 128-bit hashes, and the shards are byte-identical to a
//! one-process run for any `N`, `R`, task order and re-run tasks: chunking
//! depends only on the page sequence ([`ShardWriter::plan`]).
//!
//! Memory: an `urls` task holds its bucket's distinct URLs, an `owners`
//! task its bucket's distinct lines (1/R of the corpus's), a `lines`,
//! `finalize` task its own files' winners and line owners (1/N).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::CleanConfig;
use super::dedup::{LineOwners, UrlDedup};
use super::filters::{BadWords, LanguageFilter};
use super::output::{CleanPage, OutputFormat, ShardWriter};
use super::rules::{PageCleaner, PageRule, RuleCounters};
use super::run::{
    for_each_spill_batch, get_str, get_u32, pass1_file, put_str, CleanOptions, CleanStats,
    Finisher, Progress, Store, PASS3_BATCHES,
};
use crate::atomic::{write_atomic, AtomicFile};
use crate::error::{PipelineError, Result};
use crate::readers::{FileReport, ReadOptions};

/// The stages, in order.
pub const STAGES: [Stage; 6] = [
    Stage::Extract,
    Stage::Urls,
    Stage::Lines,
    Stage::Owners,
    Stage::Finalize,
    Stage::Write,
];

/// Folder inside the output folder holding the plan and the stages' files.
pub const WORK_DIR: &str = ".t5mix-staged";

/// One stage of a staged clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Read, length rule, URL normalization, `clean_page` (N tasks).
    Extract,
    /// Newest page per URL (R tasks).
    Urls,
    /// Line keys of winning pages (N tasks).
    Lines,
    /// Owner (smallest md5(url)) per line (R tasks).
    Owners,
    /// Line dedup, sentences, language ID, bad words, split (N tasks).
    Finalize,
    /// Shards and manifest (N tasks).
    Write,
}

impl Stage {
    /// Its name on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Extract => "extract",
            Stage::Urls => "urls",
            Stage::Lines => "lines",
            Stage::Owners => "owners",
            Stage::Finalize => "finalize",
            Stage::Write => "write",
        }
    }

    /// By name.
    pub fn parse(s: &str) -> Option<Stage> {
        STAGES.into_iter().find(|st| st.name() == s)
    }

    /// A task named `STAGE:INDEX` (e.g. `extract:3`, as `--task` takes it).
    pub fn parse_task(task: &str) -> Result<(Stage, usize)> {
        task.split_once(':')
            .and_then(|(s, t)| Some((Stage::parse(s)?, t.parse::<usize>().ok()?)))
            .ok_or_else(|| PipelineError::Config {
                what: format!("--task {task}"),
                message: format!(
                    "expected STAGE:INDEX with STAGE one of {}",
                    STAGES.map(Stage::name).join(", ")
                ),
            })
    }

    /// How many tasks it has under `plan`.
    pub fn tasks(self, plan: &StagedPlan) -> usize {
        match self {
            Stage::Urls | Stage::Owners => plan.buckets,
            _ => plan.num_tasks,
        }
    }
}

/// Everything a task needs to know, written once as `plan.json` in the
/// work folder; every task checks that it runs under the same plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedPlan {
    /// The input files, in order.
    pub inputs: Vec<PathBuf>,
    /// Tasks of the per-file stages (N).
    pub num_tasks: usize,
    /// Hash buckets of the reduce stages (R).
    pub buckets: usize,
    /// The rules.
    pub config: CleanConfig,
    /// How inputs are read.
    pub read: ReadOptions,
    /// The bad-words list and its language, if any.
    pub badwords: Option<(PathBuf, String)>,
    /// Parquet or JSONL.gz.
    pub output_format: OutputFormat,
    /// Pages per output shard.
    pub pages_per_shard: usize,
    /// Pages cleaned together in one parallel batch.
    pub batch_pages: usize,
    /// The t5mix that made the plan.
    pub tool_version: String,
}

/// The largest number of tasks or buckets.
pub const MAX_TASKS: usize = 1_000_000;

impl StagedPlan {
    /// A plan over `inputs` with the options of a one-process run.
    pub fn new(
        inputs: Vec<PathBuf>,
        num_tasks: usize,
        buckets: usize,
        opts: &CleanOptions,
        badwords: Option<(PathBuf, String)>,
    ) -> Result<Self> {
        for (what, n) in [("--num-tasks", num_tasks), ("--buckets", buckets)] {
            if !(1..=MAX_TASKS).contains(&n) {
                return Err(PipelineError::Config {
                    what: what.into(),
                    message: format!("{n} is not in 1..={MAX_TASKS}"),
                });
            }
        }
        // tasks may run from another folder: absolute paths
        let abs = |p: PathBuf| p.canonicalize().unwrap_or(p);
        Ok(StagedPlan {
            inputs: inputs.into_iter().map(abs).collect(),
            badwords: badwords.map(|(p, lang)| (abs(p), lang)),
            num_tasks,
            buckets,
            config: opts.config.clone(),
            read: opts.read.clone(),
            output_format: opts.output_format,
            pages_per_shard: opts.pages_per_shard.max(1),
            batch_pages: opts.batch_pages.max(1),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    /// Writes the plan into `out`'s work folder, or checks that the one
    /// already there is the same (a re-run resumes; another plan is refused).
    pub fn install(&self, out: &Path) -> Result<()> {
        let work = out.join(WORK_DIR);
        std::fs::create_dir_all(&work).map_err(|e| PipelineError::io(&work, e))?;
        let path = work.join("plan.json");
        match Self::load(out) {
            Ok(old) if &old == self => Ok(()),
            Ok(_) => Err(PipelineError::Config {
                what: path.display().to_string(),
                message: "a staged run with other inputs or options is under way here: \
                          finish it, or remove the folder"
                    .into(),
            }),
            Err(_) if !path.exists() => write_atomic(
                &path,
                &serde_json::to_vec_pretty(self).expect("plan serializes"),
            ),
            Err(e) => Err(e),
        }
    }

    /// The plan of the staged run in `out`.
    pub fn load(out: &Path) -> Result<Self> {
        let path = out.join(WORK_DIR).join("plan.json");
        let bytes = std::fs::read(&path).map_err(|e| PipelineError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| PipelineError::Config {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The options a task runs with (bad words loaded).
    fn options(&self, out: &Path) -> Result<CleanOptions> {
        let badwords = match &self.badwords {
            Some((p, lang)) => Some(BadWords::load(p, lang)?),
            None => None,
        };
        Ok(CleanOptions {
            config: self.config.clone(),
            read: self.read.clone(),
            badwords,
            out_dir: out.to_path_buf(),
            output_format: self.output_format,
            pages_per_shard: self.pages_per_shard,
            batch_pages: self.batch_pages,
            memory_budget: 0,
        })
    }

    /// The input files of per-file task `t`: a contiguous range.
    pub fn files_of(&self, t: usize) -> std::ops::Range<usize> {
        let f = self.inputs.len();
        (t * f / self.num_tasks)..((t + 1) * f / self.num_tasks)
    }
}

/// Where a staged run keeps its files.
struct Work {
    dir: PathBuf,
}

impl Work {
    fn new(out: &Path) -> Self {
        Work {
            dir: out.join(WORK_DIR),
        }
    }
    fn file(&self, name: String) -> PathBuf {
        self.dir.join(name)
    }
    fn marker(&self, stage: Stage, t: usize) -> PathBuf {
        self.file(format!("done/{}-{t:06}", stage.name()))
    }
    fn spill(&self, i: usize) -> PathBuf {
        self.file(format!("extract/{i:06}.spill"))
    }
    fn url_candidates(&self, t: usize, r: usize) -> PathBuf {
        self.file(format!("extract/t{t:06}.urls-b{r:06}"))
    }
    fn extract_stats(&self, t: usize) -> PathBuf {
        self.file(format!("extract/t{t:06}.json"))
    }
    fn winners(&self, r: usize, t: usize) -> PathBuf {
        self.file(format!("urls/b{r:06}-t{t:06}"))
    }
    fn line_keys(&self, t: usize, r: usize) -> PathBuf {
        self.file(format!("lines/t{t:06}-b{r:06}"))
    }
    fn owners(&self, r: usize, t: usize) -> PathBuf {
        self.file(format!("owners/b{r:06}-t{t:06}"))
    }
    fn kept(&self, i: usize) -> PathBuf {
        self.file(format!("finalize/{i:06}.pages"))
    }
    fn finalize_stats(&self, t: usize) -> PathBuf {
        self.file(format!("finalize/t{t:06}.json"))
    }
    fn write_stats(&self, t: usize) -> PathBuf {
        self.file(format!("write/t{t:06}.json"))
    }
}

/// Whether a task has finished (its marker is there).
pub fn task_done(out: &Path, stage: Stage, t: usize) -> bool {
    Work::new(out).marker(stage, t).exists()
}

/// A binary file written under a temporary name and renamed by `commit`.
struct RecordFile {
    file: AtomicFile,
}

impl RecordFile {
    fn create(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| PipelineError::io(d, e))?;
        }
        Ok(RecordFile {
            file: AtomicFile::create(path)?,
        })
    }
    /// Appends one record, written by `write`.
    fn put(
        &mut self,
        write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<()> {
        write(self.file.writer()).map_err(|e| PipelineError::io(self.file.path(), e))
    }
    /// Appends a record of fixed-size parts.
    fn put_parts(&mut self, parts: &[&[u8]]) -> Result<()> {
        self.put(|w| parts.iter().try_for_each(|p| w.write_all(p)))
    }
    fn commit(self) -> Result<()> {
        self.file.commit().map(|_| ())
    }
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> PipelineError + '_ {
    move |e| PipelineError::io(path, e)
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(io_at(path))
}

fn get_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn get_u128(r: &mut impl Read) -> std::io::Result<u128> {
    let mut b = [0u8; 16];
    r.read_exact(&mut b)?;
    Ok(u128::from_le_bytes(b))
}

/// Reads every record of `path` in order.
fn read_all<T>(
    path: &Path,
    read: fn(&mut BufReader<File>) -> std::io::Result<T>,
    mut f: impl FnMut(T),
) -> Result<()> {
    let mut records = Records::open(path.to_path_buf(), read)?;
    while let Some(x) = records.next()? {
        f(x);
    }
    Ok(())
}

fn json_file<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| PipelineError::io(d, e))?;
    }
    write_atomic(path, &serde_json::to_vec(v).expect("serializes"))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    serde_json::from_slice(&bytes).map_err(|e| PipelineError::Config {
        what: path.display().to_string(),
        message: e.to_string(),
    })
}

/// What an extract task read.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ExtractStats {
    pages_in: u64,
    bytes_in: u64,
    too_long: u64,
    reports: Vec<FileReport>,
}

/// What a finalize task decided.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FinalizeStats {
    counters: RuleCounters,
    pages_per_split: BTreeMap<String, u64>,
    /// Kept pages per input file of the task.
    kept: Vec<u64>,
}

/// What a write task wrote.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WriteStats {
    shards: Vec<PathBuf>,
    bytes_out: u64,
}

/// The bucket of a 128-bit key.
fn bucket(key: u128, buckets: usize) -> usize {
    ((key >> 64) as u64 % buckets as u64) as usize
}

/// Runs task `t` of `stage` of the staged run in `out` (whose plan is
/// installed), unless its marker says it is done; returns whether it ran.
/// A task that fails or is killed leaves no marker and runs again in full.
pub fn run_task(out: &Path, stage: Stage, t: usize, progress: &dyn Progress) -> Result<bool> {
    let plan = StagedPlan::load(out)?;
    let n = stage.tasks(&plan);
    if t >= n {
        return Err(PipelineError::Config {
            what: format!("task {t} of stage {}", stage.name()),
            message: format!("the stage has {n} tasks (0..{n})"),
        });
    }
    let work = Work::new(out);
    let marker = work.marker(stage, t);
    if marker.exists() {
        return Ok(false);
    }
    // the stages before must be complete
    for before in STAGES.iter().take_while(|s| **s != stage) {
        for k in 0..before.tasks(&plan) {
            if !work.marker(*before, k).exists() {
                return Err(PipelineError::Config {
                    what: format!("task {t} of stage {}", stage.name()),
                    message: format!(
                        "stage {} is not complete (task {k} has no marker): run it first",
                        before.name()
                    ),
                });
            }
        }
    }
    fail_point(stage, t, "start")?;
    let opts = plan.options(out)?;
    match stage {
        Stage::Extract => extract(&plan, &work, &opts, t, progress)?,
        Stage::Urls => urls(&plan, &work, t)?,
        Stage::Lines => lines(&plan, &work, t)?,
        Stage::Owners => owners(&plan, &work, t)?,
        Stage::Finalize => finalize(&plan, &work, &opts, t, progress)?,
        Stage::Write => write(&plan, &work, out, t)?,
    }
    fail_point(stage, t, "end")?;
    json_file(&marker, &t)?;
    Ok(true)
}

/// Tests stop a task on purpose: `T5MIX_FAIL_TASK=STAGE:TASK:WHERE` (where:
/// `start` or `end`, i.e. after its outputs but before its marker).
fn fail_point(stage: Stage, t: usize, at: &str) -> Result<()> {
    if std::env::var("T5MIX_FAIL_TASK").ok().as_deref()
        == Some(&format!("{}:{t}:{at}", stage.name()))
    {
        return Err(PipelineError::Config {
            what: format!("task {t} of stage {}", stage.name()),
            message: format!("stopped at {at} by T5MIX_FAIL_TASK"),
        });
    }
    Ok(())
}

fn extract(
    plan: &StagedPlan,
    work: &Work,
    opts: &CleanOptions,
    t: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let cleaner = PageCleaner::new(plan.config.clone());
    let dir = work.file("extract".into());
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let budget = std::sync::atomic::AtomicU64::new(0);
    let mut stats = ExtractStats::default();
    let mut urls = UrlDedup::default();
    for i in plan.files_of(t) {
        let s = pass1_file(i, &plan.inputs[i], &dir, opts, &cleaner, progress, &budget)?;
        // with no budget every page is spilled; a file with no page left
        // none: an empty one stands for it
        if let Store::Memory(pages) = &s.spill {
            debug_assert!(pages.is_empty());
            write_atomic(&work.spill(i), b"")?;
        }
        stats.pages_in += s.pages_in;
        stats.bytes_in += s.bytes_in;
        stats.too_long += s.too_long;
        stats.reports.push(s.report);
        for (h, ts, pos) in s.urls.entries() {
            urls.offer_hashed(h, ts, pos);
        }
    }
    let mut files = (0..plan.buckets)
        .map(|r| RecordFile::create(&work.url_candidates(t, r)))
        .collect::<Result<Vec<_>>>()?;
    let mut entries: Vec<(u128, &str, (u64, u64))> = urls.entries().collect();
    entries.sort_unstable();
    for (h, ts, (file, record)) in entries {
        files[bucket(h, plan.buckets)].put(|w| {
            w.write_all(&h.to_le_bytes())?;
            put_str(w, ts)?;
            w.write_all(&file.to_le_bytes())?;
            w.write_all(&record.to_le_bytes())
        })?;
    }
    files.into_iter().try_for_each(RecordFile::commit)?;
    json_file(&work.extract_stats(t), &stats)
}

/// One sorted record file, read a record at a time.
struct Records<T> {
    r: BufReader<File>,
    path: PathBuf,
    read: fn(&mut BufReader<File>) -> std::io::Result<T>,
}

impl<T> Records<T> {
    fn open(path: PathBuf, read: fn(&mut BufReader<File>) -> std::io::Result<T>) -> Result<Self> {
        Ok(Records {
            r: open(&path)?,
            path,
            read,
        })
    }

    fn next(&mut self) -> Result<Option<T>> {
        use std::io::BufRead;
        if self.r.fill_buf().map_err(io_at(&self.path))?.is_empty() {
            return Ok(None);
        }
        (self.read)(&mut self.r)
            .map(Some)
            .map_err(io_at(&self.path))
    }
}

/// Merges sorted files: `f(record, source)` in ascending order. Memory:
/// one record per source, whatever the files hold.
fn merge_sorted<T: Ord>(
    mut sources: Vec<Records<T>>,
    mut f: impl FnMut(T, usize) -> Result<()>,
) -> Result<()> {
    use std::cmp::Reverse;
    let mut heap = std::collections::BinaryHeap::with_capacity(sources.len());
    for (i, s) in sources.iter_mut().enumerate() {
        if let Some(x) = s.next()? {
            heap.push(Reverse((x, i)));
        }
    }
    while let Some(Reverse((x, i))) = heap.pop() {
        if let Some(y) = sources[i].next()? {
            heap.push(Reverse((y, i)));
        }
        f(x, i)?;
    }
    Ok(())
}

type UrlCandidate = (u128, String, (u64, u64));

fn read_url_candidate(f: &mut BufReader<File>) -> std::io::Result<UrlCandidate> {
    let h = get_u128(f)?;
    let ts = get_str(f)?;
    Ok((h, ts, (get_u64(f)?, get_u64(f)?)))
}

fn write_winner(f: &mut RecordFile, (file, record): (u64, u64)) -> Result<()> {
    f.put_parts(&[&file.to_le_bytes(), &record.to_le_bytes()])
}

/// tfds `select_newest_page` for one bucket, as a merge of the extract
/// tasks' sorted candidates: per URL the newest timestamp, ties to the
/// first in input order (as [`UrlDedup`]); each winner goes to the file of
/// the task that reads its page.
fn urls(plan: &StagedPlan, work: &Work, r: usize) -> Result<()> {
    let sources = (0..plan.num_tasks)
        .map(|t| Records::open(work.url_candidates(t, r), read_url_candidate))
        .collect::<Result<Vec<_>>>()?;
    let mut task_of = vec![0usize; plan.inputs.len()];
    for t in 0..plan.num_tasks {
        plan.files_of(t).for_each(|i| task_of[i] = t);
    }
    let mut out = (0..plan.num_tasks)
        .map(|t| RecordFile::create(&work.winners(r, t)))
        .collect::<Result<Vec<_>>>()?;
    // the current URL and its best page so far: candidates come by
    // (url, timestamp, position), so the first of the newest timestamp wins
    let mut best: Option<(u128, String, (u64, u64))> = None;
    merge_sorted(sources, |(h, ts, pos), _| {
        match &mut best {
            Some((bh, bts, bpos)) if *bh == h => {
                if ts > *bts {
                    (*bts, *bpos) = (ts, pos);
                }
            }
            _ => {
                if let Some((_, _, pos)) = best.replace((h, ts, pos)) {
                    write_winner(&mut out[task_of[pos.0 as usize]], pos)?;
                }
            }
        }
        Ok(())
    })?;
    if let Some((_, _, pos)) = best {
        write_winner(&mut out[task_of[pos.0 as usize]], pos)?;
    }
    out.into_iter().try_for_each(RecordFile::commit)
}

/// The winning (file, record) positions of task `t`'s files.
fn winners_of(plan: &StagedPlan, work: &Work, t: usize) -> Result<HashSet<(u64, u64)>> {
    let mut set = HashSet::new();
    for r in 0..plan.buckets {
        read_all(
            &work.winners(r, t),
            |f| Ok((get_u64(f)?, get_u64(f)?)),
            |p| {
                set.insert(p);
            },
        )?;
    }
    Ok(set)
}

fn lines(plan: &StagedPlan, work: &Work, t: usize) -> Result<()> {
    let winners = winners_of(plan, work, t)?;
    let mut owners = LineOwners::default();
    if plan.config.line_dedup {
        for i in plan.files_of(t) {
            for_each_spill_batch(&work.spill(i), plan.batch_pages, true, |batch| {
                for s in batch {
                    if s.verdict == 0
                        && (!plan.config.url_dedup || winners.contains(&(i as u64, s.record)))
                    {
                        owners.offer_keys(&s.line_keys, s.url_hash);
                    }
                }
                Ok(())
            })?;
        }
    }
    write_pairs(plan.buckets, owners.entries(), |r| work.line_keys(t, r))
}

/// Writes (key, owner) pairs sorted by key into one file per bucket.
fn write_pairs(
    buckets: usize,
    pairs: impl Iterator<Item = (u128, u128)>,
    path_of: impl Fn(usize) -> PathBuf,
) -> Result<()> {
    let mut pairs: Vec<(u128, u128)> = pairs.collect();
    pairs.par_sort_unstable();
    let mut files = (0..buckets)
        .map(|r| RecordFile::create(&path_of(r)))
        .collect::<Result<Vec<_>>>()?;
    for (k, u) in pairs {
        files[bucket(k, buckets)].put_parts(&[&k.to_le_bytes(), &u.to_le_bytes()])?;
    }
    files.into_iter().try_for_each(RecordFile::commit)
}

fn read_pairs(path: &Path, f: impl FnMut((u128, u128))) -> Result<()> {
    read_all(path, read_pair, f)
}

fn read_pair(r: &mut BufReader<File>) -> std::io::Result<(u128, u128)> {
    Ok((get_u128(r)?, get_u128(r)?))
}

/// tfds's line owners for one bucket, as a merge of the lines tasks'
/// sorted (line key, smallest md5(url)) files: the smallest over all tasks,
/// sent back to each task that has the line. A line on many pages is a run
/// of records here, not a table entry.
fn owners(plan: &StagedPlan, work: &Work, r: usize) -> Result<()> {
    let sources = (0..plan.num_tasks)
        .map(|t| Records::open(work.line_keys(t, r), read_pair))
        .collect::<Result<Vec<_>>>()?;
    let mut out = (0..plan.num_tasks)
        .map(|t| RecordFile::create(&work.owners(r, t)))
        .collect::<Result<Vec<_>>>()?;
    // the current key, its owner (the first, i.e. smallest, hash) and the
    // tasks that have it
    let mut group: Option<(u128, u128)> = None;
    let mut tasks: Vec<usize> = Vec::new();
    let mut flush = |group: (u128, u128), tasks: &mut Vec<usize>| -> Result<()> {
        for t in tasks.drain(..) {
            out[t].put_parts(&[&group.0.to_le_bytes(), &group.1.to_le_bytes()])?;
        }
        Ok(())
    };
    merge_sorted(sources, |(k, u), t| {
        match group {
            Some((gk, _)) if gk == k => {}
            _ => {
                if let Some(g) = group.replace((k, u)) {
                    flush(g, &mut tasks)?;
                }
            }
        }
        tasks.push(t);
        Ok(())
    })?;
    if let Some(g) = group {
        flush(g, &mut tasks)?;
    }
    out.into_iter().try_for_each(RecordFile::commit)
}

fn finalize(
    plan: &StagedPlan,
    work: &Work,
    opts: &CleanOptions,
    t: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let cfg = &plan.config;
    let cleaner = PageCleaner::new(cfg.clone());
    let language = LanguageFilter::for_config(cfg)?;
    let winners = winners_of(plan, work, t)?;
    let mut owners = LineOwners::default();
    if cfg.line_dedup {
        for r in 0..plan.buckets {
            read_pairs(&work.owners(r, t), |(k, u)| owners.offer_keys(&[k], u))?;
        }
    }
    let url_winner = |_: &str, pos: (u64, u64)| winners.contains(&pos);
    let fin = Finisher {
        cfg,
        cleaner: &cleaner,
        url_winner: &url_winner,
        lines: cfg.line_dedup.then_some(&owners),
        language: language.as_ref(),
        badwords: opts.badwords.as_ref(),
    };
    let mut stats = FinalizeStats::default();
    let mut split_stats = CleanStats::default();
    for i in plan.files_of(t) {
        let mut out = RecordFile::create(&work.kept(i))?;
        let mut kept = 0u64;
        for_each_spill_batch(
            &work.spill(i),
            plan.batch_pages * PASS3_BATCHES,
            false,
            |batch| {
                let bytes: u64 = batch.iter().map(|s| s.text.len() as u64).sum();
                let outcomes: Vec<_> = batch.into_par_iter().map(|s| fin.finish(i, s)).collect();
                for p in split_stats.add_outcomes(outcomes, &mut stats.counters) {
                    out.put(|w| write_page(w, &p))?;
                    kept += 1;
                }
                progress.advance(bytes);
                Ok(())
            },
        )?;
        out.commit()?;
        stats.kept.push(kept);
    }
    stats.pages_per_split = split_stats.pages_per_split;
    json_file(&work.finalize_stats(t), &stats)
}

fn write_page(w: &mut impl Write, p: &CleanPage) -> std::io::Result<()> {
    put_str(w, &p.text)?;
    put_str(w, &p.url)?;
    put_str(w, &p.timestamp)?;
    put_str(w, &p.split)
}

fn read_page(r: &mut impl Read) -> std::io::Result<CleanPage> {
    Ok(CleanPage {
        text: get_str(r)?,
        url: get_str(r)?,
        timestamp: get_str(r)?,
        split: get_str(r)?,
    })
}

/// Skips `n` pages of a kept-pages file.
fn skip_pages(r: &mut BufReader<File>, n: u64) -> std::io::Result<()> {
    for _ in 0..n {
        for _ in 0..4 {
            let len = get_u32(r)?;
            r.seek_relative(len as i64)?;
        }
    }
    Ok(())
}

fn write(plan: &StagedPlan, work: &Work, out: &Path, t: usize) -> Result<()> {
    // kept pages per input file, from every finalize task
    let mut kept = Vec::with_capacity(plan.inputs.len());
    for k in 0..plan.num_tasks {
        let s: FinalizeStats = read_json(&work.finalize_stats(k))?;
        kept.extend(s.kept);
    }
    let total: u64 = kept.iter().sum();
    let per = plan.pages_per_shard as u64;
    let shards = total.div_ceil(per).max(1);
    let metadata = super::run::shard_metadata(&plan.config);
    let mut stats = WriteStats::default();
    for shard in (t as u64..shards).step_by(plan.num_tasks) {
        let (first, end) = (shard * per, ((shard + 1) * per).min(total));
        let mut writer = ShardWriter::new(
            out,
            plan.output_format,
            plan.pages_per_shard,
            metadata.clone(),
        )?
        .starting_at(shard as usize);
        let encoding = writer.encoding();
        // the files holding pages first..end, in order
        let mut start = 0u64;
        for (i, &n) in kept.iter().enumerate() {
            let (lo, hi) = (start.max(first), (start + n).min(end));
            if lo < hi {
                let path = work.kept(i);
                let mut r = open(&path)?;
                skip_pages(&mut r, lo - start).map_err(io_at(&path))?;
                let mut pages = Vec::new();
                for _ in lo..hi {
                    pages.push(read_page(&mut r).map_err(io_at(&path))?);
                    if pages.len() >= plan.batch_pages * PASS3_BATCHES {
                        let chunks = writer.plan(std::mem::take(&mut pages));
                        encode_append(chunks, &encoding, &mut writer)?;
                    }
                }
                let chunks = writer.plan(pages);
                encode_append(chunks, &encoding, &mut writer)?;
            }
            start += n;
        }
        let (paths, bytes) = writer.finish()?;
        stats.shards.extend(paths);
        stats.bytes_out += bytes;
    }
    json_file(&work.write_stats(t), &stats)
}

fn encode_append(
    chunks: Vec<super::output::Chunk>,
    encoding: &super::output::Encoding,
    writer: &mut ShardWriter,
) -> Result<()> {
    let encoded: Vec<_> = chunks
        .into_par_iter()
        .map(|c| c.encode(encoding))
        .collect::<Result<_>>()?;
    encoded.into_iter().try_for_each(|e| writer.append(e))
}

/// Writes `manifest.json` from every task's statistics once all write
/// tasks are done (what the one-process run reports, timings aside), then
/// removes the work folder. Returns the statistics.
pub fn finish_run(out: &Path, t0: Instant) -> Result<CleanStats> {
    let plan = StagedPlan::load(out)?;
    let work = Work::new(out);
    for stage in STAGES {
        for k in 0..stage.tasks(&plan) {
            if !work.marker(stage, k).exists() {
                return Err(PipelineError::Config {
                    what: out.display().to_string(),
                    message: format!("task {k} of stage {} is not done", stage.name()),
                });
            }
        }
    }
    let opts = plan.options(out)?;
    let mut stats = CleanStats::start(plan.inputs.len(), &opts);
    let mut counters = RuleCounters::default();
    for t in 0..plan.num_tasks {
        let e: ExtractStats = read_json(&work.extract_stats(t))?;
        for report in e.reports {
            stats.add_read(0, 0, report);
        }
        stats.pages_in += e.pages_in;
        stats.bytes_in += e.bytes_in;
        counters.pages_dropped[PageRule::TooLong as usize] += e.too_long;
        let f: FinalizeStats = read_json(&work.finalize_stats(t))?;
        counters.merge(&f.counters);
        for (k, v) in f.pages_per_split {
            stats.pages_out += v;
            *stats.pages_per_split.entry(k).or_default() += v;
        }
        let w: WriteStats = read_json(&work.write_stats(t))?;
        stats.shards.extend(w.shards);
        stats.bytes_out += w.bytes_out;
    }
    stats.shards.sort();
    stats.close(&counters, t0);
    stats.write_manifest(out)?;
    std::fs::remove_dir_all(&work.dir).map_err(io_at(&work.dir))?;
    Ok(stats)
}

/// Runs every stage on this machine: each stage's unfinished tasks on
/// `workers` threads (tasks share the rayon pool), in `order` (a seeded
/// shuffle for tests; `None`: in index order), then the manifest.
pub fn run_local(
    plan: &StagedPlan,
    out: &Path,
    workers: usize,
    order: Option<u64>,
    progress: &dyn Progress,
) -> Result<CleanStats> {
    let t0 = Instant::now();
    plan.install(out)?;
    for stage in STAGES {
        let mut tasks: Vec<usize> = (0..stage.tasks(plan)).collect();
        if let Some(seed) = order {
            // a shuffle by a keyed hash of (seed, stage, task)
            tasks.sort_by_key(|&t| super::dedup::md5_u128(&format!("{seed}:{stage:?}:{t}")));
        }
        progress.stage(stage.name(), 0);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.max(1))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&t) = tasks.get(k) else {
                                return Ok(());
                            };
                            run_task(out, stage, t, progress)?;
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("task thread"))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
    }
    finish_run(out, t0)
}

/// How to run the staged run planned in `out` on a batch scheduler: the
/// launch files of [`crate::launch::write_launchers`] in the work folder's
/// `launch/`, and a summary with each stage's task command. Every machine
/// must see `out` and the inputs at the same paths.
pub fn write_launchers(plan: &StagedPlan, out: &Path) -> Result<String> {
    use crate::launch::{LaunchStage, INDEX};
    let out = out.canonicalize().map_err(io_at(out))?;
    let o = out.display().to_string();
    let stages: Vec<LaunchStage> = STAGES
        .iter()
        .map(|s| LaunchStage {
            name: s.name().to_string(),
            tasks: s.tasks(plan),
            command: format!("clean --out '{o}' --task {}:{INDEX}", s.name()),
        })
        .collect();
    let files = crate::launch::write_launchers(
        &Work::new(&out).file("launch".into()),
        "clean",
        &stages,
        &format!("clean --out '{o}' --finish"),
    )?;
    Ok(format!(
        "staged clean planned in {o}: {} input files, {} tasks, {} buckets\n\
         run each stage's tasks (any order, any machine that sees {o}), stage after stage, then --finish:\n{files}",
        plan.inputs.len(),
        plan.num_tasks,
        plan.buckets
    ))
}
