//! Tasks: a source, an ordered list of preprocessors, output features, a
//! postprocessor and metrics — seqio's `Task`.
//!
//! Preprocessors run in order. Row-level ones (before [`Preprocessor::Tokenize`])
//! map a source row (column → text) to a row whose `inputs` / `targets`
//! fields are the example's text; `Tokenize` encodes them; token-level ones
//! (after it) map token sequences, e.g. T5's span corruption or the user's own
//! function; [`Preprocessor::AppendEosAfterTrim`] ends each feature as its
//! [`Feature`] says. The built-in catalog ([`crate::catalog`]) is written with
//! this same public API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use t5mix_pipeline::features::SequenceLength;
use t5mix_pipeline::preprocessors::{ExampleRng, Objective};
use t5mix_pipeline::vocab::Vocabulary;

use crate::error::{Result, TaskError};
use crate::metrics::{Metric, MetricFn, PostprocessFn, Postprocessor};
use crate::mixture::validate_name;
use crate::supervised::{FileFormat, Row, TextFormat};

/// Where a task's examples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Source {
    /// The Parquet shards of `t5mix clean`: one row per page with column
    /// `text`, of the split asked for.
    CleanShards {},
    /// Files by split, as globs relative to the input directory.
    Files {
        /// How rows are read.
        format: FileFormat,
        /// Split name → file globs (`a|b`: the first alternative that exists).
        splits: BTreeMap<String, Vec<String>>,
        /// Formats of splits whose files differ from `format` (CoLA's headed
        /// test file, MRPC's train/validation split by id list).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        split_formats: BTreeMap<String, FileFormat>,
    },
}

impl Source {
    /// Files of `split` in `format`, one glob each.
    pub fn files(format: FileFormat, splits: &[(&str, &str)]) -> Source {
        Source::Files {
            format,
            splits: splits
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            split_formats: BTreeMap::new(),
        }
    }

    /// The file format of `split` (files sources only).
    pub fn file_format(&self, split: &str) -> Option<&FileFormat> {
        match self {
            Source::CleanShards {} => None,
            Source::Files {
                format,
                split_formats,
                ..
            } => Some(split_formats.get(split).unwrap_or(format)),
        }
    }

    /// The source files of `split` under the inputs: the clean Parquet
    /// shards among them (files, folders, globs), or every glob of the split
    /// under each input folder, in order (an `a|b` entry matching its first
    /// alternative found).
    pub fn split_files(&self, task: &str, split: &str, inputs: &[String]) -> Result<Vec<PathBuf>> {
        let splits = match self {
            Source::CleanShards {} => {
                let files: Vec<PathBuf> = t5mix_pipeline::readers::expand_inputs(inputs)?
                    .into_iter()
                    .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                    .collect();
                if files.is_empty() {
                    return Err(TaskError::task(
                        task,
                        format!("no clean Parquet shards among {inputs:?}"),
                    ));
                }
                return Ok(files);
            }
            Source::Files { splits, .. } => splits,
        };
        let globs = splits.get(split).ok_or_else(|| {
            TaskError::task(
                task,
                format!(
                    "no split {split:?} (splits: {:?})",
                    splits.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        let mut files = Vec::new();
        for dir in inputs {
            for g in globs {
                let mut found = None;
                let mut last_err = String::new();
                for a in g.split('|') {
                    let pattern = Path::new(dir).join(a.trim()).display().to_string();
                    match t5mix_pipeline::readers::expand_inputs(&[pattern]) {
                        Ok(f) if !f.is_empty() => {
                            found = Some(f);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => last_err = e.to_string(),
                    }
                }
                files.extend(found.ok_or_else(|| {
                    TaskError::task(
                        task,
                        format!("split {split}: no file {g:?} in {dir} {last_err}"),
                    )
                })?);
            }
        }
        Ok(files)
    }
}

/// One output feature (seqio's `Feature`): its length, whether it ends with
/// EOS, whether an example must have it. The vocabulary is the build's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Length the feature is trimmed to (EOS included).
    pub length: usize,
    /// `append_eos_after_trim` puts EOS at its end.
    #[serde(default = "yes")]
    pub add_eos: bool,
    /// An example must have it (seqio's `required`).
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl Feature {
    /// A required feature of `length` with EOS.
    pub fn new(length: usize) -> Feature {
        Feature {
            length,
            add_eos: true,
            required: true,
        }
    }
}

/// The `inputs` and `targets` features of an encoder-decoder task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFeatures {
    /// Encoder feature.
    pub inputs: Feature,
    /// Decoder feature.
    pub targets: Feature,
}

impl Default for OutputFeatures {
    fn default() -> Self {
        OutputFeatures::lengths(SequenceLength::SUPERVISED)
    }
}

impl OutputFeatures {
    /// Both features with EOS, of these lengths.
    pub fn lengths(l: SequenceLength) -> Self {
        OutputFeatures {
            inputs: Feature::new(l.inputs),
            targets: Feature::new(l.targets),
        }
    }

    /// The two lengths.
    pub fn sequence_length(&self) -> SequenceLength {
        SequenceLength {
            inputs: self.inputs.length,
            targets: self.targets.length,
        }
    }

    /// The same features with other lengths.
    pub fn with_lengths(mut self, l: SequenceLength) -> Self {
        self.inputs.length = l.inputs;
        self.targets.length = l.targets;
        self
    }
}

/// A row-level preprocessor written in Rust (seqio's map over examples):
/// closures `Fn(&Row) -> Result<Row, String>` are row preprocessors. The
/// returned row's `inputs` / `targets` fields are what `Tokenize` encodes;
/// [`crate::pair`] builds such a row.
pub trait RowFn: Send + Sync {
    /// The row after this step.
    fn map(&self, row: &Row) -> std::result::Result<Row, String>;
}

impl<F> RowFn for F
where
    F: Fn(&Row) -> std::result::Result<Row, String> + Send + Sync,
{
    fn map(&self, row: &Row) -> std::result::Result<Row, String> {
        self(row)
    }
}

/// One tokenized example as token preprocessors see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Encoder tokens.
    pub inputs: Vec<u32>,
    /// Decoder tokens.
    pub targets: Vec<u32>,
}

/// What a token preprocessor may use: the example's own random stream
/// (keyed by seed, task, source shard and example index, so results do not
/// depend on threads or workers), the vocabulary and the output features.
pub struct TokenContext<'a> {
    /// The example's random stream.
    pub rng: ExampleRng,
    /// The build's vocabulary.
    pub vocab: &'a Vocabulary,
    /// The task's output features.
    pub features: &'a OutputFeatures,
}

/// A token-level preprocessor written in Rust: closures
/// `Fn(&mut Tokens, &mut TokenContext) -> Result<(), String>` are token
/// preprocessors.
pub trait TokenFn: Send + Sync {
    /// Changes one example in place.
    fn map(
        &self,
        tokens: &mut Tokens,
        cx: &mut TokenContext<'_>,
    ) -> std::result::Result<(), String>;
}

impl<F> TokenFn for F
where
    F: Fn(&mut Tokens, &mut TokenContext<'_>) -> std::result::Result<(), String> + Send + Sync,
{
    fn map(
        &self,
        tokens: &mut Tokens,
        cx: &mut TokenContext<'_>,
    ) -> std::result::Result<(), String> {
        self(tokens, cx)
    }
}

/// A user's function held by a task: compared by identity, shown by name,
/// never serialised (such tasks live in the program that registers them).
pub struct Custom<T: ?Sized> {
    /// Name shown by `t5mix tasks show`.
    pub name: String,
    /// The function.
    pub f: Arc<T>,
}

impl<T: ?Sized> Clone for Custom<T> {
    fn clone(&self) -> Self {
        Custom {
            name: self.name.clone(),
            f: self.f.clone(),
        }
    }
}

impl<T: ?Sized> std::fmt::Debug for Custom<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custom({:?})", self.name)
    }
}

impl<T: ?Sized> PartialEq for Custom<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.f, &other.f)
    }
}

impl<T: ?Sized> Serialize for Custom<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<rust: {}>", self.name))
    }
}

impl<'de, T: ?Sized> Deserialize<'de> for Custom<T> {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a Rust function cannot come from a file: register it from Rust",
        ))
    }
}

/// One step of a task (seqio's `preprocessors=[...]`).
///
/// In a TOML task file: `preprocessors = [{ text = { kind = "template",
/// inputs = "q: {q}", targets = "{a}" } }, "tokenize", "append_eos_after_trim"]`
/// or, for T5's span corruption, `[{ rekey = { targets = "text" } },
/// "tokenize", { denoise = { name = "span_corruption", noise_density = 0.15,
/// mean_noise_span_length = 3.0 } }, "append_eos_after_trim"]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocessor {
    /// `seqio.preprocessors.rekey`: feature ← column (T5's unsupervised
    /// tasks: `targets` ← `text`); other columns are dropped.
    Rekey(BTreeMap<String, String>),
    /// One of T5's text preprocessors (`glue`, `stsb`, `squad`,
    /// `summarize`, `translate`) or a `{column}` template: sets `inputs` and
    /// `targets`, keeps the other columns.
    Text(TextFormat),
    /// The user's row function.
    Rows(Custom<dyn RowFn>),
    /// `seqio.preprocessors.tokenize`: `inputs` / `targets` text → ids (no EOS).
    Tokenize,
    /// T5's unsupervised chain on `targets`: `select_random_chunk` →
    /// `reduce_concat_tokens` → `split_tokens` → the objective
    /// (`span_corruption`, `iid_denoising`, `prefix_lm`, `deshuffling`, `full_lm`).
    Denoise(Objective),
    /// The user's token function.
    Tokens(Custom<dyn TokenFn>),
    /// `seqio.preprocessors.append_eos_after_trim`: each feature trimmed to
    /// its length, EOS last where the feature says `add_eos`.
    AppendEosAfterTrim,
}

impl Preprocessor {
    /// A row preprocessor from a Rust function.
    pub fn rows(name: &str, f: impl RowFn + 'static) -> Self {
        Preprocessor::Rows(Custom {
            name: name.into(),
            f: Arc::new(f),
        })
    }

    /// A token preprocessor from a Rust function.
    pub fn tokens(name: &str, f: impl TokenFn + 'static) -> Self {
        Preprocessor::Tokens(Custom {
            name: name.into(),
            f: Arc::new(f),
        })
    }

    /// Runs before tokenization (on rows of text).
    pub fn is_row_level(&self) -> bool {
        matches!(
            self,
            Preprocessor::Rekey(_) | Preprocessor::Text(_) | Preprocessor::Rows(_)
        )
    }
}

/// A row holding `inputs` and `targets` text (what a row preprocessor
/// returns for a text-to-text example).
pub fn pair(inputs: impl Into<String>, targets: impl Into<String>) -> Row {
    Row::from([
        ("inputs".to_string(), inputs.into()),
        ("targets".to_string(), targets.into()),
    ])
}

/// A registered task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// seqio-style name.
    pub name: String,
    /// One line for `t5mix tasks list`.
    #[serde(default)]
    pub description: String,
    /// Its source.
    pub source: Source,
    /// Its preprocessors, in order.
    pub preprocessors: Vec<Preprocessor>,
    /// Its output features (lengths are defaults a build may override).
    #[serde(default)]
    pub output_features: OutputFeatures,
    /// Applied to decoded predictions and to targets before the metrics
    /// (default: the text format's, as T5 sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postprocessor: Option<Postprocessor>,
    /// Metrics (default: the text format's, as T5 sets them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<Metric>>,
}

impl Task {
    /// A task with no preprocessors yet, T5's supervised lengths (512 / 128).
    pub fn new(name: &str, source: Source) -> Task {
        Task {
            name: name.into(),
            description: String::new(),
            source,
            preprocessors: Vec::new(),
            output_features: OutputFeatures::default(),
            postprocessor: None,
            metrics: None,
        }
    }

    /// The one-line description.
    pub fn description(mut self, d: &str) -> Task {
        self.description = d.into();
        self
    }

    /// Appends a preprocessor.
    pub fn preprocessor(mut self, p: Preprocessor) -> Task {
        self.preprocessors.push(p);
        self
    }

    /// Appends a text format, then `tokenize` and `append_eos_after_trim`:
    /// T5's supervised chain.
    pub fn text_to_text(self, format: TextFormat) -> Task {
        self.preprocessor(Preprocessor::Text(format))
            .preprocessor(Preprocessor::Tokenize)
            .preprocessor(Preprocessor::AppendEosAfterTrim)
    }

    /// The default feature lengths.
    pub fn lengths(mut self, inputs: usize, targets: usize) -> Task {
        self.output_features = self
            .output_features
            .with_lengths(SequenceLength { inputs, targets });
        self
    }

    /// The output features.
    pub fn output_features(mut self, f: OutputFeatures) -> Task {
        self.output_features = f;
        self
    }

    /// The postprocessor.
    pub fn postprocessor(mut self, p: Postprocessor) -> Task {
        self.postprocessor = Some(p);
        self
    }

    /// A postprocessor written in Rust.
    pub fn postprocess_fn(self, name: &str, f: impl PostprocessFn + 'static) -> Task {
        self.postprocessor(Postprocessor::Custom(Custom {
            name: name.into(),
            f: Arc::new(f),
        }))
    }

    /// Adds a metric.
    pub fn metric(mut self, m: Metric) -> Task {
        self.metrics.get_or_insert_with(Vec::new).push(m);
        self
    }

    /// Adds a metric written in Rust.
    pub fn metric_fn(self, name: &str, f: impl MetricFn + 'static) -> Task {
        self.metric(Metric::Custom(Custom {
            name: name.into(),
            f: Arc::new(f),
        }))
    }

    /// The default feature lengths.
    pub fn sequence_length(&self) -> SequenceLength {
        self.output_features.sequence_length()
    }

    /// The text format among the preprocessors, if any.
    pub fn text_format(&self) -> Option<&TextFormat> {
        self.preprocessors.iter().find_map(|p| match p {
            Preprocessor::Text(f) => Some(f),
            _ => None,
        })
    }

    /// The unsupervised objective among the preprocessors, if any.
    pub fn objective(&self) -> Option<Objective> {
        self.preprocessors.iter().find_map(|p| match p {
            Preprocessor::Denoise(o) => Some(*o),
            _ => None,
        })
    }

    /// The postprocessor used: the task's, else its text format's, else none.
    pub fn effective_postprocessor(&self) -> Postprocessor {
        self.postprocessor.clone().unwrap_or_else(|| {
            self.text_format()
                .map(|f| f.default_evaluation().0)
                .unwrap_or_default()
        })
    }

    /// The metrics used: the task's, else its text format's (T5's
    /// `metric_fns`), else exact match for a text task.
    pub fn effective_metrics(&self) -> Vec<Metric> {
        if let Some(m) = &self.metrics {
            return m.clone();
        }
        match self.text_format() {
            Some(f) => f.default_evaluation().1,
            None if self.objective().is_none() => vec![Metric::ExactMatch],
            None => Vec::new(),
        }
    }

    /// Checks the task before it is registered: its name, that the chain
    /// tokenizes once with row steps before and token steps after, its text
    /// formats and lengths.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let bad = |m: String| Err(TaskError::task(&self.name, m));
        let tokenize: Vec<usize> = self
            .preprocessors
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Preprocessor::Tokenize))
            .map(|(i, _)| i)
            .collect();
        let [at] = tokenize[..] else {
            return bad(format!(
                "preprocessors need exactly one \"tokenize\" (found {})",
                tokenize.len()
            ));
        };
        for (i, p) in self.preprocessors.iter().enumerate() {
            if p.is_row_level() != (i < at) {
                return bad(format!(
                    "preprocessor {} ({}) is {}-level but comes {} \"tokenize\"",
                    i + 1,
                    step_name(p),
                    if p.is_row_level() { "row" } else { "token" },
                    if i < at { "before" } else { "after" }
                ));
            }
            if let Preprocessor::Text(f) = p {
                f.validate()
                    .or_else(|e| bad(format!("preprocessor {}: {e}", i + 1)))?;
            }
        }
        if matches!(self.source, Source::CleanShards {})
            && !self.preprocessors[..at]
                .iter()
                .any(|p| matches!(p, Preprocessor::Rekey(_) | Preprocessor::Rows(_)))
        {
            return bad("a clean-shards source has only a `text` column: rekey it (e.g. targets = \"text\")".into());
        }
        self.sequence_length()
            .check()
            .or_else(|e| bad(format!("output_features: {e}")))?;
        for (name, f) in [
            ("inputs", &self.output_features.inputs),
            ("targets", &self.output_features.targets),
        ] {
            if f.length == 0 && f.add_eos {
                return bad(format!(
                    "output_features.{name}: length 0 leaves no room for EOS (add_eos = false \
                     for a feature a task does not have)"
                ));
            }
        }
        Ok(())
    }
}

fn step_name(p: &Preprocessor) -> String {
    match p {
        Preprocessor::Rekey(_) => "rekey".into(),
        Preprocessor::Text(_) => "text".into(),
        Preprocessor::Rows(c) => format!("rows {:?}", c.name),
        Preprocessor::Tokenize => "tokenize".into(),
        Preprocessor::Denoise(_) => "denoise".into(),
        Preprocessor::Tokens(c) => format!("tokens {:?}", c.name),
        Preprocessor::AppendEosAfterTrim => "append_eos_after_trim".into(),
    }
}

/// Tasks by name.
#[derive(Debug, Clone, Default)]
pub struct TaskRegistry {
    tasks: BTreeMap<String, Task>,
}

impl TaskRegistry {
    /// Registers a task after [`Task::validate`].
    pub fn add(&mut self, task: Task) -> Result<()> {
        task.validate()?;
        if self.tasks.contains_key(&task.name) {
            return Err(crate::MixtureError::Duplicate(task.name).into());
        }
        self.tasks.insert(task.name.clone(), task);
        Ok(())
    }

    /// The task of that name.
    pub fn get(&self, name: &str) -> Option<&Task> {
        self.tasks.get(name)
    }

    /// The task of that name, or an error that says where to look.
    pub fn task(&self, name: &str) -> Result<&Task> {
        self.get(name).ok_or_else(|| {
            TaskError::task(name, "no such task (see `t5mix tasks list`)".to_string())
        })
    }

    /// All tasks, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The built-in catalog ([`crate::catalog`]).
    pub fn builtin() -> Self {
        let mut r = TaskRegistry::default();
        for t in crate::catalog::tasks() {
            r.add(t).expect("built-in task");
        }
        r
    }
}
