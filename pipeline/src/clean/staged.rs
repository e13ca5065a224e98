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
//! | `lines` | N | its spills, the URL winners | by bucket, sorted: each line key of its winning pages with the smallest md5(url), and every line (key, md5(url), index) |
//! | `owners` | R | the line keys of its bucket | the owner of each line key, by task |
//! | `finalize` | N | its spills, winners, lines and their owners | each file's kept pages after line dedup, language ID and bad words |
//! | `write` | N | every file's kept-page count, the pages of its shards | shards `part-K` with `K mod N` = task (uploaded with [`StagedPlan::publish_to`]) |
//!
//! Then [`finish_run`] writes `manifest.json` (uploaded last).
//!
//! tfds's order is kept (URL dedup, `clean_page`, line dedup, then language
//! ID), keys are full 128-bit hashes, and the shards are byte-identical to a
//! one-process run for any `N`, `R`, task order and re-run tasks: chunking
//! depends only on the page sequence ([`ShardWriter::plan`]).
//!
//! Memory is bounded whatever the input size: the reduce stages (`urls`,
//! `owners`) merge sorted files and hold one record per task; `extract`
//! and `lines` sort their records externally, holding at most the plan's
//! memory budget (`--memory-budget-mb`, per task) in sorted runs before
//! they spill; what grows is one bit per input record of a task's files
//! (the URL winners, in `lines` and `finalize`) and one bit per line of its
//! winning pages (the owned lines, in `finalize`, decided by a merge join
//! of its lines with their owners), and for `extract` one input file's
//! URL table.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::CleanConfig;
use super::dedup::{Bits, LineVerdicts};
use super::filters::{BadWords, LanguageFilter};
use super::output::{CleanPage, OutputFormat, ShardWriter};
use super::rules::{PageCleaner, PageRule, RuleCounters};
use super::run::{
    for_each_spill_batch, get_str, get_u32, pass1_file, put_str, CleanOptions, CleanStats,
    Finisher, Progress, Spilled, Store, PASS3_BATCHES,
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
    /// Bytes of records a task sorts in memory before it spills a sorted
    /// run (`--memory-budget-mb`; the output does not depend on it).
    #[serde(default)]
    pub memory_budget: u64,
    /// Object storage URL the write tasks upload their shards to (and
    /// `--finish` the manifest, last); `None`: the shards stay in the
    /// run's folder.
    #[serde(default)]
    pub publish_to: Option<String>,
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
            memory_budget: opts.memory_budget,
            publish_to: None,
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
            Ok(old) if old.same_output(self) => Ok(()),
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

    /// The plan with its shards uploaded to `url` by the write tasks.
    pub fn publishing_to(self, url: Option<&str>) -> Self {
        StagedPlan {
            publish_to: url.map(|u| u.trim_end_matches('/').to_string()),
            ..self
        }
    }

    /// Where the shards end up: the upload URL, else the run's folder.
    pub fn destination(&self, out: &Path) -> String {
        match &self.publish_to {
            Some(url) => url.clone(),
            None => out.display().to_string(),
        }
    }

    /// Whether two plans make the same shards (they may differ in memory).
    fn same_output(&self, other: &Self) -> bool {
        let without_budget = |p: &Self| StagedPlan {
            memory_budget: 0,
            ..p.clone()
        };
        without_budget(self) == without_budget(other)
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
    fn line_probes(&self, t: usize, r: usize) -> PathBuf {
        self.file(format!("lines/t{t:06}-b{r:06}.probes"))
    }
    fn sort_runs(&self, stage: Stage, t: usize) -> PathBuf {
        self.file(format!("sort/{}-t{t:06}", stage.name()))
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
    let mut candidates = ExternalSort::new(
        work.sort_runs(Stage::Extract, t),
        plan.memory_budget,
        URL_CANDIDATE_BYTES,
        put_url_candidate,
        read_url_candidate,
    )?;
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
        // the file's newest page per URL; across files the urls stage decides
        for (h, ts, pos) in s.urls.entries() {
            candidates.push((h, ts.to_string(), pos))?;
        }
    }
    let mut files = (0..plan.buckets)
        .map(|r| RecordFile::create(&work.url_candidates(t, r)))
        .collect::<Result<Vec<_>>>()?;
    candidates.finish(|c| files[bucket(c.0, plan.buckets)].put(|w| put_url_candidate(w, &c)))?;
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

/// Sorted runs that pile up are merged into one when there are this many
/// (so a task keeps this many files open, whatever its budget).
const MAX_RUNS: usize = 64;
/// The fewest records of a sorted run, whatever the budget.
const MIN_RUN_RECORDS: usize = 256;

/// Records sorted with bounded memory: up to the budget in memory, beyond
/// it sorted runs in a folder of the task, merged at the end.
struct ExternalSort<T> {
    buf: Vec<T>,
    cap: usize,
    dir: PathBuf,
    runs: Vec<PathBuf>,
    made: usize,
    put: fn(&mut BufWriter<File>, &T) -> std::io::Result<()>,
    get: fn(&mut BufReader<File>) -> std::io::Result<T>,
}

impl<T: Ord + Send> ExternalSort<T> {
    /// A sort holding up to `budget` bytes of records of about
    /// `record_bytes` each; runs go to `dir` (emptied first: a killed
    /// task's runs are not reused).
    fn new(
        dir: PathBuf,
        budget: u64,
        record_bytes: usize,
        put: fn(&mut BufWriter<File>, &T) -> std::io::Result<()>,
        get: fn(&mut BufReader<File>) -> std::io::Result<T>,
    ) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        let cap = usize::try_from(budget / record_bytes as u64)
            .unwrap_or(usize::MAX)
            .max(MIN_RUN_RECORDS);
        Ok(ExternalSort {
            buf: Vec::new(),
            cap,
            dir,
            runs: Vec::new(),
            made: 0,
            put,
            get,
        })
    }

    fn push(&mut self, x: T) -> Result<()> {
        self.buf.push(x);
        if self.buf.len() >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the records in memory as a sorted run.
    fn spill(&mut self) -> Result<()> {
        self.buf.par_sort_unstable();
        let put = self.put;
        let records = std::mem::take(&mut self.buf);
        self.write_run(|f| records.iter().try_for_each(|x| f.put(|w| put(w, x))))?;
        if self.runs.len() >= MAX_RUNS {
            let sources = self.open_runs()?;
            let old = std::mem::take(&mut self.runs);
            self.write_run(|f| merge_sorted(sources, |x, _| f.put(|w| put(w, &x))))?;
            old.iter()
                .try_for_each(|p| std::fs::remove_file(p).map_err(io_at(p)))?;
        }
        Ok(())
    }

    fn write_run(&mut self, fill: impl FnOnce(&mut RecordFile) -> Result<()>) -> Result<()> {
        let path = self.dir.join(format!("run-{:06}", self.made));
        self.made += 1;
        let mut f = RecordFile::create(&path)?;
        fill(&mut f)?;
        f.commit()?;
        self.runs.push(path);
        Ok(())
    }

    fn open_runs(&self) -> Result<Vec<Records<T>>> {
        self.runs
            .iter()
            .map(|p| Records::open(p.clone(), self.get))
            .collect()
    }

    /// Calls `f` on every record in ascending order, then removes the runs.
    fn finish(mut self, mut f: impl FnMut(T) -> Result<()>) -> Result<()> {
        if self.runs.is_empty() {
            self.buf.par_sort_unstable();
            return self.buf.into_iter().try_for_each(f);
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        merge_sorted(self.open_runs()?, |x, _| f(x))?;
        std::fs::remove_dir_all(&self.dir).map_err(io_at(&self.dir))
    }
}

type UrlCandidate = (u128, String, (u64, u64));
/// Bytes in memory of a URL candidate (its timestamp about 20).
const URL_CANDIDATE_BYTES: usize = 80;

fn put_url_candidate(w: &mut BufWriter<File>, (h, ts, pos): &UrlCandidate) -> std::io::Result<()> {
    w.write_all(&h.to_le_bytes())?;
    put_str(w, ts)?;
    w.write_all(&pos.0.to_le_bytes())?;
    w.write_all(&pos.1.to_le_bytes())
}

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

/// The winning (file, record) positions of a task's files: a bit per
/// record.
struct Winners {
    first_file: usize,
    records: Vec<Bits>,
}

impl Winners {
    fn of(plan: &StagedPlan, work: &Work, t: usize) -> Result<Self> {
        let files = plan.files_of(t);
        let mut records: Vec<Bits> = files.clone().map(|_| Bits::default()).collect();
        for r in 0..plan.buckets {
            let path = work.winners(r, t);
            let mut stray = None;
            read_all(
                &path,
                |f| Ok((get_u64(f)?, get_u64(f)?)),
                |(file, record)| match (file as usize)
                    .checked_sub(files.start)
                    .and_then(|k| records.get_mut(k))
                {
                    Some(bits) => bits.insert(record),
                    None => stray = Some(file),
                },
            )?;
            if let Some(file) = stray {
                return Err(PipelineError::BadInput {
                    path,
                    location: format!("input file {file}"),
                    message: format!("not a file of task {t}"),
                });
            }
        }
        Ok(Winners {
            first_file: files.start,
            records,
        })
    }

    fn contains(&self, (file, record): (u64, u64)) -> bool {
        self.records[file as usize - self.first_file].contains(record)
    }
}

/// Whether a page's lines take part in line dedup: it is kept for its URL
/// and passed `clean_page`.
fn dedups_lines(plan: &StagedPlan, winners: &Winners, file: usize, s: &Spilled) -> bool {
    s.verdict == 0 && (!plan.config.url_dedup || winners.contains((file as u64, s.record)))
}

/// A line of a task's winning pages: (line key, md5(url) of its page, index
/// of the line among the task's).
type LineProbe = (u128, u128, u64);
/// Bytes in memory of a [`LineProbe`].
const LINE_PROBE_BYTES: usize = 48;

fn put_probe(w: &mut BufWriter<File>, (k, u, seq): &LineProbe) -> std::io::Result<()> {
    w.write_all(&k.to_le_bytes())?;
    w.write_all(&u.to_le_bytes())?;
    w.write_all(&seq.to_le_bytes())
}

fn read_probe(r: &mut BufReader<File>) -> std::io::Result<LineProbe> {
    Ok((get_u128(r)?, get_u128(r)?, get_u64(r)?))
}

/// The lines of a task's winning pages, sorted externally by key: per
/// bucket the smallest md5(url) of each key (for `owners`) and every line
/// (for `finalize`'s join with the owners).
fn lines(plan: &StagedPlan, work: &Work, t: usize) -> Result<()> {
    let winners = Winners::of(plan, work, t)?;
    let mut probes = ExternalSort::new(
        work.sort_runs(Stage::Lines, t),
        plan.memory_budget,
        LINE_PROBE_BYTES,
        put_probe,
        read_probe,
    )?;
    if plan.config.line_dedup {
        let mut seq = 0u64;
        for i in plan.files_of(t) {
            for_each_spill_batch(&work.spill(i), plan.batch_pages, true, |batch| {
                for s in batch.iter().filter(|s| dedups_lines(plan, &winners, i, s)) {
                    for &k in &s.line_keys {
                        probes.push((k, s.url_hash, seq))?;
                        seq += 1;
                    }
                }
                Ok(())
            })?;
        }
    }
    let create = |path: &dyn Fn(usize) -> PathBuf| {
        (0..plan.buckets)
            .map(|r| RecordFile::create(&path(r)))
            .collect::<Result<Vec<_>>>()
    };
    let mut keys = create(&|r| work.line_keys(t, r))?;
    let mut all = create(&|r| work.line_probes(t, r))?;
    let mut last: Option<u128> = None;
    probes.finish(|p| {
        let r = bucket(p.0, plan.buckets);
        // the first of a key's run has its smallest md5(url)
        if last != Some(p.0) {
            keys[r].put_parts(&[&p.0.to_le_bytes(), &p.1.to_le_bytes()])?;
            last = Some(p.0);
        }
        all[r].put(|w| put_probe(w, &p))
    })?;
    keys.into_iter().chain(all).try_for_each(RecordFile::commit)
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

/// Which lines of task `t`'s winning pages their page owns (its md5(url)
/// is the line's smallest), one bit per line in order: a merge join of the
/// task's sorted lines with their owners, bucket by bucket.
fn owned_lines(plan: &StagedPlan, work: &Work, t: usize) -> Result<Bits> {
    let mut owned = Bits::default();
    for r in 0..plan.buckets {
        let path = work.owners(r, t);
        let mut owners = Records::open(path.clone(), read_pair)?;
        let mut probes = Records::open(work.line_probes(t, r), read_probe)?;
        let mut owner = owners.next()?;
        while let Some((k, u, seq)) = probes.next()? {
            while owner.is_some_and(|(ok, _)| ok < k) {
                owner = owners.next()?;
            }
            match owner {
                Some((ok, o)) if ok == k => {
                    if o == u {
                        owned.insert(seq);
                    }
                }
                _ => {
                    return Err(PipelineError::BadInput {
                        path,
                        location: format!("line key {k:032x}"),
                        message: "no owner for a line of the task".into(),
                    })
                }
            }
        }
    }
    Ok(owned)
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
    let winners = Winners::of(plan, work, t)?;
    let owned = match cfg.line_dedup {
        true => Some(owned_lines(plan, work, t)?),
        false => None,
    };
    let url_winner = |_: &str, pos: (u64, u64)| winners.contains(pos);
    let fin = Finisher {
        cfg,
        cleaner: &cleaner,
        url_winner: &url_winner,
        lines: owned.as_ref().map(LineVerdicts::Owned),
        language: language.as_ref(),
        badwords: opts.badwords.as_ref(),
    };
    let mut stats = FinalizeStats::default();
    let mut split_stats = CleanStats::default();
    // the index of the next line of a winning page, as `lines` counted
    let mut seq = 0u64;
    for i in plan.files_of(t) {
        let mut out = RecordFile::create(&work.kept(i))?;
        let mut kept = 0u64;
        for_each_spill_batch(
            &work.spill(i),
            plan.batch_pages * PASS3_BATCHES,
            false,
            |batch| {
                let bytes: u64 = batch.iter().map(|s| s.text.len() as u64).sum();
                let first_lines: Vec<u64> = batch
                    .iter()
                    .map(|s| {
                        let first = seq;
                        if dedups_lines(plan, &winners, i, s) {
                            seq += s.line_keys.len() as u64;
                        }
                        first
                    })
                    .collect();
                let outcomes: Vec<_> = batch
                    .into_par_iter()
                    .zip(first_lines)
                    .map(|(s, first)| fin.finish(i, s, first))
                    .collect();
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
        if let Some(url) = &plan.publish_to {
            // uploaded whole (multipart) or not at all; a re-run task
            // writes and uploads the same bytes again
            for p in &paths {
                crate::remote::upload_into(p, url)?;
                std::fs::remove_file(p).map_err(io_at(p))?;
            }
        }
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
/// tasks are done (what the one-process run reports, timings aside; with
/// [`StagedPlan::publish_to`] uploaded last), then removes the work
/// folder. Returns the statistics and where the shards are.
pub fn finish_run(out: &Path, t0: Instant) -> Result<(CleanStats, String)> {
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
    if let Some(url) = &plan.publish_to {
        // last: its presence says the upload is whole
        crate::remote::upload_into(&out.join(crate::manifest::MANIFEST), url)?;
    }
    std::fs::remove_dir_all(&work.dir).map_err(io_at(&work.dir))?;
    Ok((stats, plan.destination(out)))
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
) -> Result<(CleanStats, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn put_u64(w: &mut BufWriter<File>, x: &u64) -> std::io::Result<()> {
        w.write_all(&x.to_le_bytes())
    }

    #[test]
    fn external_sort_spills_merges_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        // a deterministic scramble with repeats
        let xs: Vec<u64> = (0..40_000u64).map(|i| (i * 7_919) % 10_007).collect();
        let mut want = xs.clone();
        want.sort_unstable();
        for budget in [0, 8 * 1_000, 1 << 30] {
            let mut sort = ExternalSort::new(runs.clone(), budget, 8, put_u64, get_u64).unwrap();
            for &x in &xs {
                sort.push(x).unwrap();
            }
            // no budget: runs of MIN_RUN_RECORDS, merged when MAX_RUNS pile up
            let spilled = sort.made;
            assert_eq!(
                spilled > MAX_RUNS,
                budget == 0,
                "budget {budget}: {spilled} runs"
            );
            assert!(sort.runs.len() <= MAX_RUNS);
            let mut got = Vec::new();
            sort.finish(|x| {
                got.push(x);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want, "budget {budget}");
            assert!(!runs.exists(), "runs removed");
        }
    }
}
