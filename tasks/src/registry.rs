//! The registries a program works with — its tasks and mixtures — and TOML
//! task files, which add to both without recompiling.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, TaskError};
use crate::mixture::{Mixture, MixtureRegistry};
use crate::task::{Preprocessor, Source, Task, TaskRegistry};

/// A program's tasks and mixtures (seqio's `TaskRegistry` and
/// `MixtureRegistry`): what `t5mix::cli::main` serves.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Tasks by name.
    pub tasks: TaskRegistry,
    /// Mixtures by name.
    pub mixtures: MixtureRegistry,
}

impl Registry {
    /// The built-in tasks and mixtures.
    pub fn builtin() -> Self {
        Registry {
            tasks: TaskRegistry::builtin(),
            mixtures: MixtureRegistry::builtin(),
        }
    }

    /// Registers a task.
    pub fn add_task(&mut self, task: Task) -> Result<()> {
        self.tasks.add(task)
    }

    /// Registers a mixture.
    pub fn add_mixture(&mut self, mixture: Mixture) -> Result<()> {
        Ok(self.mixtures.add(mixture)?)
    }

    /// Adds the `[[task]]` and `[[mixture]]` tables of a TOML task file;
    /// errors name the file, and the line and key where TOML or the schema
    /// says so. Returns the names added.
    pub fn add_toml_file(&mut self, path: &Path) -> Result<Vec<String>> {
        let file_err = |message: String| TaskError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TaskFile {
            #[serde(default)]
            task: Vec<Task>,
            #[serde(default)]
            mixture: Vec<Mixture>,
        }
        let file: TaskFile = toml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        let mut names = Vec::new();
        for t in file.task {
            if t.preprocessors
                .iter()
                .any(|p| matches!(p, Preprocessor::Text(_)))
                && matches!(t.source, Source::CleanShards {})
            {
                return Err(file_err(format!(
                    "task {:?}: a text format needs a `files` source",
                    t.name
                )));
            }
            names.push(t.name.clone());
            self.tasks.add(t).map_err(|e| file_err(e.to_string()))?;
        }
        for m in file.mixture {
            names.push(m.name.clone());
            self.mixtures.add(m).map_err(|e| file_err(e.to_string()))?;
        }
        Ok(names)
    }
}

impl std::fmt::Display for Registry {
    /// A line per task (name, description) and per mixture (its tasks).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in self.tasks.iter() {
            writeln!(f, "{:<22} {}", t.name, t.description)?;
        }
        for m in self.mixtures.names() {
            match self.mixtures.tasks(m) {
                Ok(tasks) => {
                    let tasks: Vec<String> = tasks.into_iter().collect();
                    writeln!(f, "{m:<22} mixture of {}", tasks.join(", "))?
                }
                Err(e) => writeln!(f, "{m:<22} mixture ({e})")?,
            }
        }
        Ok(())
    }
}
