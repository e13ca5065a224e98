//! Tasks: a source, preprocessing, output features (seqio's `Task`).
//!
//! This part covers unsupervised tasks over clean text shards (T5's
//! `c4_v220_span_corruption` and the other objectives). Supervised tasks
//! with text templates, their postprocessors and metrics follow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use t5mix_pipeline::preprocessors::{
    Objective, DEFAULT_MEAN_NOISE_SPAN_LENGTH, DEFAULT_NOISE_DENSITY,
};

use crate::mixture::{validate_name, MixtureError};

/// Where a task's examples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// The Parquet shards of `t5mix clean` (columns `text`, `split`).
    CleanShards,
}

/// How the text becomes examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Preprocessing {
    /// T5's unsupervised chain: tokenize (no EOS) → `select_random_chunk` →
    /// `reduce_concat_tokens` → `split_tokens` → the objective →
    /// `append_eos_after_trim`.
    Unsupervised {
        /// The objective.
        objective: Objective,
    },
}

/// A registered task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// seqio-style name.
    pub name: String,
    /// One line for `t5mix tasks list`.
    pub description: String,
    /// Its source.
    pub source: Source,
    /// Its preprocessing.
    pub preprocessing: Preprocessing,
    /// Default feature lengths (`inputs`, `targets`).
    pub sequence_length: BTreeMap<String, usize>,
}

/// Tasks by name.
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, Task>,
}

impl TaskRegistry {
    /// Registers a task.
    pub fn add(&mut self, task: Task) -> Result<(), MixtureError> {
        validate_name(&task.name)?;
        if self.tasks.contains_key(&task.name) {
            return Err(MixtureError::Duplicate(task.name));
        }
        self.tasks.insert(task.name.clone(), task);
        Ok(())
    }

    /// The task of that name.
    pub fn get(&self, name: &str) -> Option<&Task> {
        self.tasks.get(name)
    }

    /// All tasks, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The built-in catalog.
    pub fn builtin() -> Self {
        let mut r = TaskRegistry::default();
        let lengths = |i: usize, t: usize| {
            BTreeMap::from([("inputs".to_string(), i), ("targets".to_string(), t)])
        };
        let unsup =
            |name: &str, description: &str, objective: Objective, i: usize, t: usize| Task {
                name: name.into(),
                description: description.into(),
                source: Source::CleanShards,
                preprocessing: Preprocessing::Unsupervised { objective },
                sequence_length: lengths(i, t),
            };
        let tasks = [
            unsup(
                "c4_span_corruption",
                "T5's pre-training objective on clean C4-style text: 15% noise in spans of mean length 3, unique sentinels",
                Objective::SpanCorruption {
                    noise_density: DEFAULT_NOISE_DENSITY,
                    mean_noise_span_length: DEFAULT_MEAN_NOISE_SPAN_LENGTH,
                },
                512,
                114,
            ),
            unsup(
                "c4_iid_denoising",
                "i.i.d. token noise (15%), each noise run replaced by a unique sentinel",
                Objective::IidDenoising { noise_density: 0.15 },
                512,
                512,
            ),
            unsup("c4_prefix_lm", "a random prefix as inputs, the rest as targets", Objective::PrefixLm, 512, 512),
            unsup("c4_deshuffling", "shuffled tokens as inputs, the original order as targets", Objective::Deshuffling, 512, 512),
            unsup("c4_full_lm", "language modelling: empty inputs, the text as targets", Objective::FullLm, 0, 512),
        ];
        for t in tasks {
            r.add(t).expect("built-in task");
        }
        r
    }
}
