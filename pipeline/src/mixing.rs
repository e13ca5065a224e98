//! The mixing engine: samples examples from built task caches by rate into
//! mixture shards (seqio's `sample_from_datasets`: i.i.d. task choice per
//! example, each task read in order and repeated when exhausted).
//!
//! Example `j` of the mixture picks its task from a random stream keyed by
//! `(seed, mixture, j)`, so shard `k` (examples `k·S .. (k+1)·S`) can be
//! built alone — by another worker, or after an interruption — with the
//! bytes a one-pass build writes. Task caches are held in memory while the
//! mixture is built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cache::Worker;
use crate::error::{PipelineError, Result};
use crate::manifest::{Manifest, MixtureManifest, TaskManifest};
use crate::preprocessors::{ExampleKey, ExampleRng};
use crate::shards::{read_example_shard, write_example_shard, ExampleStats, ShardExample};

/// A built task cache: its manifest and examples.
pub struct TaskCache {
    /// The cache's manifest.
    pub manifest: TaskManifest,
    /// All examples, in shard order.
    pub examples: Vec<ShardExample>,
}

impl TaskCache {
    /// Loads the cache in `dir` (`manifest.json` and its shards).
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?.into_task(dir)?;
        let mut examples = Vec::new();
        for s in &manifest.shards {
            examples.extend(read_example_shard(&dir.join(s))?.0);
        }
        Ok(TaskCache { manifest, examples })
    }
}

/// What to mix.
pub struct MixSpec<'a> {
    /// Mixture name (part of the random key).
    pub name: &'a str,
    /// Seed.
    pub seed: u64,
    /// Task probabilities (normalized rates), by task name.
    pub probabilities: &'a BTreeMap<String, f64>,
    /// Unnormalized rates, for the manifest.
    pub rates: &'a BTreeMap<String, f64>,
    /// Examples to write.
    pub examples: u64,
    /// Examples per shard.
    pub shard_examples: u64,
}

fn shard_name(name: &str, k: u64, n: u64) -> String {
    format!("{name}-{k:05}-of-{n:05}.parquet")
}

/// The task choices of a mixture in order: for example `j`, the task it
/// draws from and its index within that task. One at a time, so memory does
/// not grow with the mixture's size.
struct Assignments<'a> {
    spec: &'a MixSpec<'a>,
    cum: &'a [f64],
    next: Vec<u64>,
    j: u64,
}

impl Iterator for Assignments<'_> {
    type Item = (usize, u64);

    fn next(&mut self) -> Option<(usize, u64)> {
        if self.j == self.spec.examples {
            return None;
        }
        let key = ExampleKey {
            seed: self.spec.seed,
            task: self.spec.name,
            shard: 0,
            index: self.j,
        };
        self.j += 1;
        let u = ExampleRng::new(key, "mixture").unit_f64();
        let t = self
            .cum
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.cum.len() - 1);
        self.next[t] += 1;
        Some((t, self.next[t] - 1))
    }
}

/// The task probabilities as a shard records them.
fn probabilities_key(spec: &MixSpec<'_>) -> String {
    serde_json::to_string(spec.probabilities).expect("probabilities serialize")
}

/// Refuses a shard of an earlier run made with another seed or other task
/// probabilities (mixing them would give a mixture no single build makes).
fn check_kept(spec: &MixSpec<'_>, path: &Path) -> Result<()> {
    let meta = crate::shards::read_shard_metadata(path)?;
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let want = [
        ("t5mix.seed", spec.seed.to_string()),
        ("t5mix.probabilities", probabilities_key(spec)),
    ];
    for (k, v) in want {
        if get(k).as_deref() != Some(v.as_str()) {
            return Err(PipelineError::Config {
                what: path.display().to_string(),
                message: format!(
                    "made with {k} = {} but this build has {v}: build into another folder, or \
                     remove the folder to rebuild it",
                    get(k).unwrap_or_else(|| "(none)".into())
                ),
            });
        }
    }
    Ok(())
}

/// Writes the mixture's shards (those `k % worker.count == worker.index`,
/// skipping complete ones) and, when all are there, its
/// manifest. Returns the shards written now.
pub fn build_mixture(
    spec: &MixSpec<'_>,
    caches: &BTreeMap<String, TaskCache>,
    out_dir: &Path,
    worker: Worker,
) -> Result<Vec<PathBuf>> {
    Worker::new(worker.index, worker.count)?;
    crate::atomic::create_out_dir(out_dir)?;
    let tasks: Vec<&str> = spec
        .probabilities
        .iter()
        .filter(|(_, &p)| p > 0.0)
        .map(|(t, _)| t.as_str())
        .collect();
    if tasks.is_empty() {
        return Err(PipelineError::Config {
            what: format!("mixture {}", spec.name),
            message: "no task has a positive rate".into(),
        });
    }
    for t in &tasks {
        match caches.get(*t) {
            None => {
                return Err(PipelineError::Config {
                    what: format!("mixture {}", spec.name),
                    message: format!("no cache of task {t:?} among the --caches"),
                })
            }
            Some(c) if c.examples.is_empty() => {
                return Err(PipelineError::Config {
                    what: format!("mixture {}", spec.name),
                    message: format!("the cache of task {t:?} has no examples"),
                })
            }
            _ => {}
        }
    }
    let vocabulary = caches[tasks[0]].manifest.vocabulary.clone();
    if let Some(t) = tasks
        .iter()
        .find(|t| caches[**t].manifest.vocabulary != vocabulary)
    {
        return Err(PipelineError::Config {
            what: format!("mixture {}", spec.name),
            message: format!(
                "its tasks were built with different vocabularies ({} and {} have {:?} and {:?})",
                tasks[0], t, vocabulary, caches[*t].manifest.vocabulary
            ),
        });
    }
    let total: f64 = tasks.iter().map(|t| spec.probabilities[*t]).sum();
    let mut acc = 0.0;
    let cum: Vec<f64> = tasks
        .iter()
        .map(|t| {
            acc += spec.probabilities[*t] / total;
            acc
        })
        .collect();
    let per = spec.shard_examples.max(1);
    let n_shards = spec.examples.div_ceil(per);
    // shards of an earlier run must be this build's before anything is written
    for k in (0..n_shards).filter(|k| (*k as usize) % worker.count == worker.index) {
        let path = out_dir.join(shard_name(spec.name, k, n_shards));
        if path.exists() {
            check_kept(spec, &path)?;
        }
    }
    let mut assign = Assignments {
        spec,
        cum: &cum,
        next: vec![0; tasks.len()],
        j: 0,
    };
    let mut written = Vec::new();
    let mut per_task: BTreeMap<String, ExampleStats> = BTreeMap::new();
    let mut stats = ExampleStats::default();
    let pick = |(t, i): (usize, u64)| {
        let c = &caches[tasks[t]].examples;
        &c[(i % c.len() as u64) as usize]
    };
    for k in 0..n_shards {
        let count = ((k + 1) * per).min(spec.examples) - k * per;
        let path = out_dir.join(shard_name(spec.name, k, n_shards));
        // statistics of every shard (the manifest covers all), examples
        // copied only for the shards this worker writes
        let write = (k as usize) % worker.count == worker.index && !path.exists();
        let mut examples: Vec<ShardExample> = Vec::new();
        for e in assign.by_ref().take(count as usize).map(pick) {
            per_task
                .entry(e.task.clone())
                .or_default()
                .add(e.inputs.len(), e.targets.len());
            stats.add(e.inputs.len(), e.targets.len());
            if write {
                examples.push(e.clone());
            }
        }
        if !write {
            continue;
        }
        let meta = vec![
            ("t5mix.mixture".to_string(), spec.name.to_string()),
            ("t5mix.shard".to_string(), format!("{k} of {n_shards}")),
            ("t5mix.seed".to_string(), spec.seed.to_string()),
            (
                "t5mix.version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            ("t5mix.probabilities".to_string(), probabilities_key(spec)),
        ];
        write_example_shard(&path, &examples, &meta)?;
        written.push(path);
    }
    let shards: Vec<String> = (0..n_shards)
        .map(|k| shard_name(spec.name, k, n_shards))
        .collect();
    if shards.iter().all(|s| out_dir.join(s).exists()) {
        let manifest = MixtureManifest {
            mixture: spec.name.to_string(),
            seed: spec.seed,
            examples: spec.examples,
            shard_examples: per,
            shards,
            rates: spec.rates.clone(),
            probabilities: spec.probabilities.clone(),
            rates_from: "the example counts in each task cache's manifest.json".into(),
            tasks: per_task,
            stats,
            vocabulary,
            sequence_length: tasks
                .iter()
                .map(|t| (t.to_string(), caches[*t].manifest.sequence_length))
                .collect(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        Manifest::Mixture(manifest).write(out_dir)?;
    }
    Ok(written)
}
