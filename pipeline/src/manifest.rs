//! `manifest.json`: one type for the three kinds of output folder — clean
//! shards, a task cache, a mixture — with each kind's fields and its reader
//! and writer side by side. A folder is complete when its manifest is there
//! (written last, atomically); every later stage reads it first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clean::CleanStats;
use crate::error::{PipelineError, Result};
use crate::features::SequenceLength;
use crate::shards::ExampleStats;
use crate::vocab::Vocabulary;

/// File name of a manifest inside its folder.
pub const MANIFEST: &str = "manifest.json";

/// The vocabulary a folder's ids come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabularyInfo {
    /// md5 of the SentencePiece model file.
    pub md5: String,
    /// Ids with the sentinels (32100 for T5's).
    pub vocab_size: u32,
    /// Sentinels added (T5: 100).
    pub extra_ids: u32,
}

impl VocabularyInfo {
    /// What `v` is.
    pub fn of(v: &Vocabulary) -> Self {
        VocabularyInfo {
            md5: v.checksum().to_string(),
            vocab_size: v.vocab_size(),
            extra_ids: v.extra_ids(),
        }
    }

    /// Embedding rows for these ids: `vocab_size` rounded up to
    /// [`EMBEDDING_ROW_MULTIPLE`](crate::vocab::EMBEDDING_ROW_MULTIPLE).
    pub fn padded_vocab_size(&self) -> u32 {
        crate::vocab::padded_vocab_size(self.vocab_size)
    }

    /// Loads the model at `path` with this folder's sentinels, refusing a
    /// model whose md5 differs (its ids would decode to other text).
    pub fn load(&self, path: &Path) -> Result<Vocabulary> {
        let v = Vocabulary::load(path, self.extra_ids).map_err(|e| PipelineError::Config {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        if v.checksum() != self.md5 {
            return Err(PipelineError::Config {
                what: path.display().to_string(),
                message: format!(
                    "md5 {} but the shards were built with a vocabulary of md5 {}",
                    v.checksum(),
                    self.md5
                ),
            });
        }
        Ok(v)
    }
}

/// `t5mix clean`'s output: shards of clean pages and what the run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanManifest {
    /// Shard file names, in order.
    pub shards: Vec<String>,
    /// Pages in and out, per rule, per split, timings.
    pub stats: CleanStats,
    /// t5mix version.
    pub tool_version: String,
}

/// A task cache: one task's examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskManifest {
    /// Task name.
    pub task: String,
    /// Split.
    pub split: String,
    /// Seed.
    pub seed: u64,
    /// How examples were made (the objective and its parameters).
    pub objective: String,
    /// Feature lengths.
    pub sequence_length: SequenceLength,
    /// The vocabulary of the ids.
    pub vocabulary: VocabularyInfo,
    /// Shard file names, in order.
    pub shards: Vec<String>,
    /// Totals over all shards.
    pub stats: ExampleStats,
    /// Statistics per task.
    pub tasks: BTreeMap<String, ExampleStats>,
    /// t5mix version.
    pub tool_version: String,
}

/// A mixture: task caches sampled by rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixtureManifest {
    /// Mixture name.
    pub mixture: String,
    /// Seed.
    pub seed: u64,
    /// Examples in the mixture.
    pub examples: u64,
    /// Examples per shard.
    pub shard_examples: u64,
    /// Shard file names, in order.
    pub shards: Vec<String>,
    /// Rate of each task (unnormalized, as seqio's `get_rate`).
    pub rates: BTreeMap<String, f64>,
    /// Sampling probability of each task.
    pub probabilities: BTreeMap<String, f64>,
    /// Where the rates' example counts come from.
    pub rates_from: String,
    /// Statistics per task in the mixture.
    pub tasks: BTreeMap<String, ExampleStats>,
    /// Totals.
    pub stats: ExampleStats,
    /// The vocabulary shared by all tasks.
    pub vocabulary: VocabularyInfo,
    /// Feature lengths per task.
    pub sequence_length: BTreeMap<String, SequenceLength>,
    /// t5mix version.
    pub tool_version: String,
}

/// The manifest of an output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Manifest {
    /// Clean text shards.
    Clean(CleanManifest),
    /// A task cache.
    Task(TaskManifest),
    /// A mixture.
    Mixture(MixtureManifest),
}

impl Manifest {
    /// Reads `dir/manifest.json`; a folder without one is partial (an
    /// interrupted run, or workers not finalized) or not ours.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PipelineError::Config {
                    what: dir.display().to_string(),
                    message: format!(
                        "no {MANIFEST}: the folder is partial (an interrupted run, or workers \
                         not yet finalized) or was not written by t5mix"
                    ),
                }
            } else {
                PipelineError::io(&path, e)
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| PipelineError::BadInput {
            path,
            location: format!("line {}", e.line()),
            message: e.to_string(),
        })
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serializes");
        crate::atomic::write_atomic(&dir.join(MANIFEST), &json)
    }

    /// `clean`, `task` or `mixture`.
    pub fn kind(&self) -> &'static str {
        match self {
            Manifest::Clean(_) => "clean",
            Manifest::Task(_) => "task",
            Manifest::Mixture(_) => "mixture",
        }
    }

    /// Shard file names, in order.
    pub fn shards(&self) -> &[String] {
        match self {
            Manifest::Clean(m) => &m.shards,
            Manifest::Task(m) => &m.shards,
            Manifest::Mixture(m) => &m.shards,
        }
    }

    /// Shard paths inside `dir`, in order.
    pub fn shard_paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.shards().iter().map(|s| dir.join(s)).collect()
    }

    /// The vocabulary of example folders (none for clean text).
    pub fn vocabulary(&self) -> Option<&VocabularyInfo> {
        match self {
            Manifest::Clean(_) => None,
            Manifest::Task(m) => Some(&m.vocabulary),
            Manifest::Mixture(m) => Some(&m.vocabulary),
        }
    }

    /// Token statistics of example folders (none for clean text).
    pub fn example_stats(&self) -> Option<&ExampleStats> {
        match self {
            Manifest::Clean(_) => None,
            Manifest::Task(m) => Some(&m.stats),
            Manifest::Mixture(m) => Some(&m.stats),
        }
    }

    /// The model at `path` for the ids in `dir`: with the sentinels and
    /// checksum its manifest records (another model is refused), or T5's 100
    /// sentinels for a folder without one.
    pub fn vocabulary_for(dir: &Path, path: &Path) -> Result<Vocabulary> {
        match Manifest::read(dir)
            .ok()
            .as_ref()
            .and_then(Manifest::vocabulary)
        {
            Some(info) => info.load(path),
            None => Vocabulary::load(path, crate::vocab::DEFAULT_EXTRA_IDS).map_err(|e| {
                PipelineError::Config {
                    what: path.display().to_string(),
                    message: e.to_string(),
                }
            }),
        }
    }

    /// A task cache's manifest, or an error saying what `dir` holds instead.
    pub fn into_task(self, dir: &Path) -> Result<TaskManifest> {
        match self {
            Manifest::Task(m) => Ok(m),
            other => Err(PipelineError::Config {
                what: dir.display().to_string(),
                message: format!("a {} folder, not a task cache", other.kind()),
            }),
        }
    }
}

/// What [`check_example_folders`] found.
#[derive(Debug, Clone, Default)]
pub struct FolderCheck {
    /// Things worth saying (examples the lengths trim).
    pub notes: Vec<String>,
    /// The vocabulary all the folders' manifests name (none without manifests).
    pub vocabulary: Option<VocabularyInfo>,
}

/// File name of the vocabulary record a trained model carries.
pub const MODEL_VOCABULARY: &str = "t5mix_vocabulary.json";

impl VocabularyInfo {
    /// Writes this record into a model folder.
    pub fn write_to_model(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("serializes");
        crate::atomic::write_atomic(&dir.join(MODEL_VOCABULARY), &json)
    }

    /// The record of a model folder, if it has one.
    pub fn of_model(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MODEL_VOCABULARY);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| PipelineError::BadInput {
                    path,
                    location: format!("line {}", e.line()),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PipelineError::io(&path, e)),
        }
    }
}

/// Checks the shards of example folders against a model before training:
/// every folder given (not a single file) must have a manifest of examples
/// (unless `allow_partial`), all of one vocabulary, whose ids fit
/// `vocab_size` embedding rows. Notes what the lengths will trim (as
/// seqio's feature converter, longer examples are cut to the lengths).
pub fn check_example_folders(
    paths: &[PathBuf],
    vocab_size: usize,
    lengths: SequenceLength,
    allow_partial: bool,
) -> Result<FolderCheck> {
    let mut found = FolderCheck::default();
    for p in paths.iter().filter(|p| p.is_dir()) {
        let m = match Manifest::read(p) {
            Ok(m) => m,
            Err(_) if allow_partial => continue,
            Err(e) => {
                return Err(PipelineError::Config {
                    what: p.display().to_string(),
                    message: format!("{e} (pass --allow-partial to train on it anyway)"),
                })
            }
        };
        let bad = |message: String| PipelineError::Config {
            what: p.display().to_string(),
            message,
        };
        let (Some(v), Some(s)) = (m.vocabulary(), m.example_stats()) else {
            return Err(bad(format!(
                "holds {} shards, not examples: build a task from it first",
                m.kind()
            )));
        };
        if v.vocab_size as usize > vocab_size {
            return Err(bad(format!(
                "built with a vocabulary of {} ids (md5 {}), more than the model's {vocab_size} \
                 embedding rows",
                v.vocab_size, v.md5
            )));
        }
        match &found.vocabulary {
            Some(first) if first != v => {
                return Err(bad(format!(
                    "built with another vocabulary ({v:?}) than the folders before it ({first:?})"
                )))
            }
            _ => found.vocabulary = Some(v.clone()),
        }
        for (name, max, len) in [
            ("inputs", s.inputs_max_tokens, lengths.inputs),
            ("targets", s.targets_max_tokens, lengths.targets),
        ] {
            if max as usize > len {
                found.notes.push(format!(
                    "{}: {name} of up to {max} tokens are trimmed to {len}",
                    p.display()
                ));
            }
        }
    }
    Ok(found)
}
