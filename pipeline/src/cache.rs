//! Building a task cache from clean text shards: tokenize, run an
//! unsupervised objective (T5's span corruption by default), write example
//! shards and a manifest (seqio's `cache_tasks_main`).
//!
//! Source shard `i` (the i-th input file, sorted) becomes output shard
//! `<task>-<split>-<i>-of-<n>.parquet`, and its examples draw their random
//! numbers from `(seed, task, i, example index)`. So:
//! * a shard already on disk is complete (written under a temporary name,
//!   renamed when whole) and is kept when an interrupted build is resumed;
//! * `--worker-index k --num-workers m` builds the shards `i % m == k`, the
//!   same bytes a one-machine build writes; `finalize` checks that every shard
//!   is there and writes `manifest.json`;
//! * the bytes do not depend on the number of threads.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::error::{PipelineError, Result};
use crate::features::SequenceLength;
use crate::manifest::{Manifest, TaskManifest, VocabularyInfo};
use crate::shards::{
    read_example_shard, read_shard_metadata, write_example_shard, ExampleStats, ShardExample,
    ShardMetadata,
};
use crate::vocab::Vocabulary;

/// What to build.
#[derive(Clone, Copy)]
pub struct CacheSpec<'a> {
    /// Task name.
    pub task: &'a str,
    /// Split to read from the sources.
    pub split: &'a str,
    /// Seed of every example's random stream.
    pub seed: u64,
    /// Turns one source file into examples (a task's preprocessors).
    pub examples: &'a dyn ExampleProducer,
    /// The vocabulary (its checksum and size go into the metadata).
    pub vocab: &'a Vocabulary,
    /// Feature lengths, for the manifest.
    pub sequence_length: SequenceLength,
}

/// Turns source file `index` of a cache into its examples, in order. The
/// pipeline knows nothing of tasks: `t5mix_tasks::Task` implements this
/// with its preprocessors.
pub trait ExampleProducer: Sync {
    /// Emits the examples of source file `index` (`input`); returns the
    /// number of source records (documents, rows) read.
    fn produce(
        &self,
        index: usize,
        input: &Path,
        emit: &mut dyn FnMut(ShardExample),
    ) -> Result<u64>;

    /// How examples are made, for manifests and shard metadata (the
    /// objective and its parameters).
    fn describe(&self) -> String;
}

impl std::fmt::Debug for CacheSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSpec")
            .field("task", &self.task)
            .field("split", &self.split)
            .field("seed", &self.seed)
            .field("examples", &self.examples.describe())
            .field("sequence_length", &self.sequence_length)
            .finish()
    }
}

/// Which shards this process builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    /// This worker's index.
    pub index: usize,
    /// Number of workers.
    pub count: usize,
}

impl Worker {
    /// Worker `index` of `count`, checked (`index < count`).
    pub fn new(index: usize, count: usize) -> Result<Worker> {
        if count == 0 || index >= count {
            return Err(PipelineError::Config {
                what: "workers".into(),
                message: format!("worker index {index} of {count} workers"),
            });
        }
        Ok(Worker { index, count })
    }
}

impl Default for Worker {
    fn default() -> Self {
        Worker { index: 0, count: 1 }
    }
}

/// What a build did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheReport {
    /// Shards written now.
    pub written: Vec<PathBuf>,
    /// Shards found complete and kept (resume).
    pub kept: Vec<PathBuf>,
    /// Documents read by this worker.
    pub documents: u64,
    /// Statistics of the shards written now.
    pub stats: ExampleStats,
}

/// Reads the texts of one clean shard for one split.
pub fn read_clean_texts(path: &Path, split: &str) -> Result<Vec<String>> {
    crate::error::parquet_guard(path, || {
        let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let f = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| pq(&e))?
            .build()
            .map_err(|e| pq(&e))?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| pq(&e))?;
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_string_opt::<i32>().cloned())
                    .ok_or_else(|| PipelineError::BadInput {
                        path: path.to_path_buf(),
                        location: "schema".into(),
                        message: format!("not a clean shard: no string column {name:?}"),
                    })
            };
            let text = col("text")?;
            let splits = col("split")?;
            for i in 0..batch.num_rows() {
                if !text.is_null(i) && splits.value(i) == split {
                    out.push(text.value(i).to_string());
                }
            }
        }
        Ok(out)
    })
}

/// The metadata that says how a shard was made: a shard kept on resume, or
/// listed at `finalize`, must have been made with the same.
fn identity(spec: &CacheSpec<'_>) -> Vec<(String, String)> {
    vec![
        ("t5mix.task".to_string(), spec.task.to_string()),
        ("t5mix.split".to_string(), spec.split.to_string()),
        ("t5mix.seed".to_string(), spec.seed.to_string()),
        ("t5mix.objective".to_string(), spec.examples.describe()),
        (
            "t5mix.sequence_length".to_string(),
            spec.sequence_length.to_string(),
        ),
        (
            "t5mix.vocabulary_md5".to_string(),
            spec.vocab.checksum().to_string(),
        ),
        // sentinels change ids: recorded last (after the version), so the
        // older keys keep their order
        (
            "t5mix.vocab_size".to_string(),
            spec.vocab.vocab_size().to_string(),
        ),
    ]
}

/// Refuses a shard on disk made with other options than `spec`'s (an
/// earlier run, or another worker, with another seed, vocabulary, lengths
/// or objective): mixing them would give a cache no single build makes.
fn check_identity(spec: &CacheSpec<'_>, path: &Path) -> Result<ShardMetadata> {
    let meta = read_shard_metadata(path)?;
    for (k, want) in identity(spec) {
        let got = meta
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.as_str());
        if got != Some(want.as_str()) {
            return Err(PipelineError::Config {
                what: path.display().to_string(),
                message: format!(
                    "made with {k} = {} but this build has {want}: build into another folder, \
                     or remove the folder to rebuild it",
                    got.unwrap_or("(none)")
                ),
            });
        }
    }
    Ok(meta)
}

fn shard_name(task: &str, split: &str, i: usize, n: usize) -> String {
    format!("{task}-{split}-{i:05}-of-{n:05}.parquet")
}

/// Builds this worker's shards of the cache into `out_dir`.
/// What building one shard did.
struct ShardOutcome {
    path: PathBuf,
    kept: bool,
    documents: u64,
    stats: ExampleStats,
}

fn build_one(
    spec: &CacheSpec<'_>,
    i: usize,
    n: usize,
    input: &Path,
    out_dir: &Path,
) -> Result<ShardOutcome> {
    let path = out_dir.join(shard_name(spec.task, spec.split, i, n));
    if path.exists() {
        // checked by build_cache before any shard was written
        return Ok(ShardOutcome {
            path,
            kept: true,
            documents: 0,
            stats: ExampleStats::default(),
        });
    }
    let mut examples = Vec::new();
    let mut stats = ExampleStats::default();
    let documents = spec.examples.produce(i, input, &mut |e: ShardExample| {
        stats.add(e.inputs.len(), e.targets.len());
        examples.push(e);
    })?;
    // the old key order (task, split, source, shard, seed, …): same bytes
    let mut meta = identity(spec);
    let vocab_size = meta.pop().expect("vocab size");
    let rest = meta.split_off(2);
    meta.extend([
        ("t5mix.source".to_string(), input.display().to_string()),
        ("t5mix.shard".to_string(), format!("{i} of {n}")),
    ]);
    meta.extend(rest);
    meta.extend([
        (
            "t5mix.stats".to_string(),
            serde_json::to_string(&stats).unwrap_or_default(),
        ),
        (
            "t5mix.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        vocab_size,
    ]);
    write_example_shard(&path, &examples, &meta)?;
    Ok(ShardOutcome {
        path,
        kept: false,
        documents,
        stats,
    })
}

/// Builds this worker's shards of the cache into `out_dir`, several source
/// shards at once; `on_shard` is called as each is done.
pub fn build_cache(
    spec: &CacheSpec<'_>,
    inputs: &[PathBuf],
    out_dir: &Path,
    worker: Worker,
    on_shard: impl Fn(usize, usize) + Sync,
) -> Result<CacheReport> {
    use rayon::prelude::*;
    Worker::new(worker.index, worker.count)?;
    crate::atomic::create_out_dir(out_dir)?;
    let n = inputs.len();
    // shards of an earlier run must be this build's before anything is written
    for i in (0..n).filter(|i| i % worker.count == worker.index) {
        let path = out_dir.join(shard_name(spec.task, spec.split, i, n));
        if path.exists() {
            check_identity(spec, &path)?;
        }
    }
    let outcomes: Vec<ShardOutcome> = inputs
        .par_iter()
        .enumerate()
        .filter(|(i, _)| i % worker.count == worker.index)
        .map(|(i, input)| {
            let r = build_one(spec, i, n, input, out_dir);
            on_shard(i, n);
            r
        })
        .collect::<Result<_>>()?;
    let mut report = CacheReport::default();
    for o in outcomes {
        report.documents += o.documents;
        report.stats.merge(&o.stats);
        if o.kept {
            report.kept.push(o.path);
        } else {
            report.written.push(o.path);
        }
    }
    Ok(report)
}

/// Checks that all `n` shards of the cache are there and writes
/// `manifest.json` (atomically) from their metadata.
pub fn finalize(spec: &CacheSpec<'_>, num_shards: usize, out_dir: &Path) -> Result<TaskManifest> {
    let mut stats = ExampleStats::default();
    let mut shards = Vec::new();
    let mut missing = Vec::new();
    for i in 0..num_shards {
        let name = shard_name(spec.task, spec.split, i, num_shards);
        let path = out_dir.join(&name);
        if !path.exists() {
            missing.push(name);
            continue;
        }
        let meta = check_identity(spec, &path)?;
        let s: Option<ExampleStats> = meta
            .iter()
            .find(|(k, _)| k == "t5mix.stats")
            .and_then(|(_, v)| serde_json::from_str(v).ok());
        let s = match s {
            Some(s) => s,
            None => {
                let (ex, _) = read_example_shard(&path)?;
                let mut s = ExampleStats::default();
                for e in &ex {
                    s.add(e.inputs.len(), e.targets.len());
                }
                s
            }
        };
        stats.merge(&s);
        shards.push(name);
    }
    if !missing.is_empty() {
        return Err(PipelineError::Config {
            what: format!("cache {}", out_dir.display()),
            message: format!(
                "{} of {num_shards} shards missing, e.g. {}",
                missing.len(),
                missing[0]
            ),
        });
    }
    let manifest = TaskManifest {
        task: spec.task.to_string(),
        split: spec.split.to_string(),
        seed: spec.seed,
        objective: spec.examples.describe(),
        sequence_length: spec.sequence_length,
        vocabulary: VocabularyInfo::of(spec.vocab),
        shards,
        tasks: BTreeMap::from([(spec.task.to_string(), stats.clone())]),
        stats,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    Manifest::Task(manifest.clone()).write(out_dir)?;
    Ok(manifest)
}
