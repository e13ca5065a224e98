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
use crate::supervised::{read_rows, FileFormat, Row, TextFormat};
use std::path::Path;
use std::sync::Arc;

/// Where a task's examples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Source {
    /// The Parquet shards of `t5mix clean` (columns `text`, `split`).
    CleanShards,
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
    /// The file format of `split` (files sources only).
    pub fn file_format(&self, split: &str) -> Option<&FileFormat> {
        match self {
            Source::CleanShards => None,
            Source::Files {
                format,
                split_formats,
                ..
            } => Some(split_formats.get(split).unwrap_or(format)),
        }
    }

    /// The files of `split` under each input folder, in order: every glob
    /// of the split, an `a|b` entry matching its first alternative found.
    pub fn split_files(
        &self,
        task: &str,
        split: &str,
        dirs: &[String],
    ) -> Result<Vec<std::path::PathBuf>, String> {
        let Source::Files { splits, .. } = self else {
            return Err(format!("task {task} reads clean shards, not split files"));
        };
        let globs = splits.get(split).ok_or_else(|| {
            format!(
                "task {task} has no split {split:?} (splits: {:?})",
                splits.keys().collect::<Vec<_>>()
            )
        })?;
        let mut files = Vec::new();
        for dir in dirs {
            for g in globs {
                let alternatives: Vec<&str> = g.split('|').collect();
                let mut found = None;
                let mut last_err = String::new();
                for a in &alternatives {
                    let pattern = std::path::Path::new(dir)
                        .join(a.trim())
                        .display()
                        .to_string();
                    match t5mix_pipeline::readers::expand_inputs(&[pattern]) {
                        Ok(f) if !f.is_empty() => {
                            found = Some(f);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => last_err = e.to_string(),
                    }
                }
                match found {
                    Some(f) => files.extend(f),
                    None => {
                        return Err(format!(
                            "task {task}, split {split}: no file {g:?} in {dir} {last_err}"
                        ))
                    }
                }
            }
        }
        Ok(files)
    }
}

/// A text preprocessor written in Rust: one source row → `(inputs, targets)`
/// text. Closures `Fn(&Row) -> Result<(String, String), String>` are
/// preprocessors:
///
/// ```
/// use std::collections::BTreeMap;
/// use t5mix_tasks::supervised::FileFormat;
/// use t5mix_tasks::{Source, Task, TaskRegistry};
/// let source = Source::Files {
///     format: FileFormat::Jsonl,
///     splits: BTreeMap::from([("train".to_string(), vec!["train.jsonl".to_string()])]),
///     split_formats: BTreeMap::new(),
/// };
/// let task = Task::custom("shout_qa", source, "uppercase question → answer", |row: &t5mix_tasks::supervised::Row| {
///     Ok((format!("question: {}", row["question"].to_uppercase()), row["answer"].clone()))
/// });
/// let mut reg = TaskRegistry::builtin();
/// reg.add(task).unwrap();
/// assert!(reg.get("shout_qa").is_some());
/// ```
pub trait Preprocessor: Send + Sync {
    /// The `(inputs, targets)` text of one row.
    fn preprocess(&self, row: &Row) -> Result<(String, String), String>;
}

impl<F> Preprocessor for F
where
    F: Fn(&Row) -> Result<(String, String), String> + Send + Sync,
{
    fn preprocess(&self, row: &Row) -> Result<(String, String), String> {
        self(row)
    }
}

/// A Rust preprocessor held by a task (not serialisable: such tasks live in
/// the program that registers them).
#[derive(Clone)]
pub struct CustomPreprocessor(pub Arc<dyn Preprocessor>);

impl std::fmt::Debug for CustomPreprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomPreprocessor")
    }
}

impl PartialEq for CustomPreprocessor {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// How the text becomes examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Preprocessing {
    /// T5's unsupervised chain: tokenize (no EOS) → `select_random_chunk` →
    /// `reduce_concat_tokens` → `split_tokens` → the objective →
    /// `append_eos_after_trim`.
    Unsupervised {
        /// The objective.
        objective: Objective,
    },
    /// Rows formatted into `inputs` / `targets` text, tokenized, EOS after trimming.
    Supervised {
        /// The text format.
        format: TextFormat,
    },
    /// Rows through a Rust [`Preprocessor`], then as `Supervised`.
    #[serde(skip)]
    Custom(CustomPreprocessor),
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
    /// Its preprocessing.
    pub preprocessing: Preprocessing,
    /// Default feature lengths (`inputs`, `targets`; 512 / 128 if not given).
    #[serde(default = "default_lengths")]
    pub sequence_length: BTreeMap<String, usize>,
}

fn default_lengths() -> BTreeMap<String, usize> {
    BTreeMap::from([("inputs".to_string(), 512), ("targets".to_string(), 128)])
}

impl Task {
    /// A supervised task whose rows go through a Rust preprocessor (a
    /// closure or a [`Preprocessor`] impl).
    pub fn custom(
        name: &str,
        source: Source,
        description: &str,
        preprocessor: impl Preprocessor + 'static,
    ) -> Task {
        Task {
            name: name.into(),
            description: description.into(),
            source,
            preprocessing: Preprocessing::Custom(CustomPreprocessor(Arc::new(preprocessor))),
            sequence_length: default_lengths(),
        }
    }

    /// Whether rows become text pairs (a supervised or Rust-preprocessed task).
    pub fn is_supervised(&self) -> bool {
        !matches!(self.preprocessing, Preprocessing::Unsupervised { .. })
    }

    /// The `(inputs, targets)` text of every row of one of `split`'s files.
    pub fn text_pairs(&self, path: &Path, split: &str) -> Result<Vec<(String, String)>, String> {
        let ff = self
            .source
            .file_format(split)
            .ok_or_else(|| format!("task {}: a supervised task needs a files source", self.name))?;
        let rows = read_rows(path, ff).map_err(|e| e.to_string())?;
        rows.iter()
            .enumerate()
            .map(|(i, r)| match &self.preprocessing {
                Preprocessing::Supervised { format } => {
                    format.format(r, path, i + 1).map_err(|e| e.to_string())
                }
                Preprocessing::Custom(p) => {
                    p.0.preprocess(r)
                        .map_err(|e| format!("{}: row {}: {e}", path.display(), i + 1))
                }
                Preprocessing::Unsupervised { .. } => {
                    Err(format!("task {} is unsupervised", self.name))
                }
            })
            .collect()
    }
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
        for t in glue_tasks() {
            r.add(t).expect("built-in task");
        }
        r
    }

    /// Adds the tasks of a TOML task file (`[[task]]` tables); errors name
    /// the file, and the line and key where TOML or the schema says so.
    pub fn add_toml_file(&mut self, path: &std::path::Path) -> Result<Vec<String>, String> {
        self.add_toml_file_with_mixtures(path, &mut crate::mixture::MixtureRegistry::default())
    }

    /// Like [`TaskRegistry::add_toml_file`], also adding the file's
    /// `[[mixture]]` tables to `mixtures`.
    pub fn add_toml_file_with_mixtures(
        &mut self,
        path: &std::path::Path,
        mixtures: &mut crate::mixture::MixtureRegistry,
    ) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TaskFile {
            #[serde(default)]
            task: Vec<Task>,
            #[serde(default)]
            mixture: Vec<crate::mixture::Mixture>,
        }
        let file: TaskFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut names = Vec::new();
        for t in file.task {
            if let Preprocessing::Supervised { format } = &t.preprocessing {
                format.validate().map_err(|e| {
                    format!(
                        "{}: task {:?}: preprocessing.format: {e}",
                        path.display(),
                        t.name
                    )
                })?;
                if matches!(t.source, Source::CleanShards) {
                    return Err(format!(
                        "{}: task {:?}: a supervised task needs a `files` source",
                        path.display(),
                        t.name
                    ));
                }
            }
            for k in t.sequence_length.keys() {
                if k != "inputs" && k != "targets" {
                    return Err(format!(
                        "{}: task {:?}: sequence_length.{k}: only inputs and targets",
                        path.display(),
                        t.name
                    ));
                }
            }
            names.push(t.name.clone());
            self.add(t)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        for m in file.mixture {
            names.push(m.name.clone());
            mixtures
                .add(m)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(names)
    }
}

fn tsv_task(
    name: &str,
    description: &str,
    splits: &[(&str, &str)],
    format: TextFormat,
    targets_length: usize,
) -> Task {
    Task {
        name: name.into(),
        description: description.into(),
        source: Source::Files {
            format: FileFormat::Tsv {
                header: true,
                columns: vec![],
            },
            splits: splits
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            split_formats: BTreeMap::new(),
        },
        preprocessing: Preprocessing::Supervised { format },
        sequence_length: BTreeMap::from([
            ("inputs".to_string(), 512),
            ("targets".to_string(), targets_length),
        ]),
    }
}

fn glue_format(config: &str, fields: &[(&str, &str)], label: &str) -> TextFormat {
    TextFormat::Glue {
        config: config.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        label: Some(label.into()),
    }
}

fn files_task(
    name: &str,
    description: &str,
    format: FileFormat,
    splits: &[(&str, &str)],
    text: TextFormat,
    lengths: (usize, usize),
) -> Task {
    Task {
        name: name.into(),
        description: description.into(),
        source: Source::Files {
            format,
            splits: splits
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
            split_formats: BTreeMap::new(),
        },
        preprocessing: Preprocessing::Supervised { format: text },
        sequence_length: BTreeMap::from([
            ("inputs".to_string(), lengths.0),
            ("targets".to_string(), lengths.1),
        ]),
    }
}

/// GLUE tasks over the files of the GLUE download (one directory per task),
/// SQuAD over its JSON files and CNN/DailyMail over `.story` files.
fn glue_tasks() -> Vec<Task> {
    let mut v = glue_tsv_tasks();
    // CoLA: header-less train/dev files, a headed test file
    let mut cola = tsv_task(
        "glue_cola",
        "GLUE CoLA: `cola sentence: …` → unacceptable / acceptable (Matthews correlation)",
        &[
            ("train", "train.tsv"),
            ("validation", "dev.tsv"),
            ("test", "test.tsv"),
        ],
        glue_format("cola", &[("sentence", "sentence")], "label"),
        128,
    );
    if let Source::Files {
        format,
        split_formats,
        ..
    } = &mut cola.source
    {
        *format = FileFormat::Tsv {
            header: false,
            columns: ["source", "label", "original_label", "sentence"]
                .map(String::from)
                .to_vec(),
        };
        split_formats.insert(
            "test".into(),
            FileFormat::Tsv {
                header: true,
                columns: vec![],
            },
        );
    }
    v.push(cola);
    // MRPC: the MSR paraphrase files, train/validation split by dev_ids as tfds
    let msr = |ids: Option<&str>, keep_listed: bool, unlabeled: bool| FileFormat::MsrParaphrase {
        ids: ids.map(String::from),
        keep_listed,
        unlabeled,
    };
    let mut mrpc = files_task(
        "glue_mrpc",
        "GLUE MRPC: `mrpc sentence1: … sentence2: …` → not_equivalent / equivalent (F1, accuracy); MSR files + dev_ids",
        msr(Some("dev_ids.tsv|dev_ids"), false, false),
        &[
            ("train", "msr_paraphrase_train.txt|train"),
            ("validation", "msr_paraphrase_train.txt|train"),
            ("test", "msr_paraphrase_test.txt|test"),
        ],
        glue_format(
            "mrpc",
            &[("sentence1", "sentence1"), ("sentence2", "sentence2")],
            "label",
        ),
        (512, 128),
    );
    if let Source::Files { split_formats, .. } = &mut mrpc.source {
        split_formats.insert(
            "validation".into(),
            msr(Some("dev_ids.tsv|dev_ids"), true, false),
        );
        split_formats.insert("test".into(), msr(None, false, true));
    }
    v.push(mrpc);
    v.push(tsv_task(
        "glue_ax",
        "GLUE AX diagnostics (test only), formatted as MNLI: `mnli hypothesis: … premise: …`",
        &[("test", "AX.tsv|ax.tsv")],
        TextFormat::Glue {
            config: "ax".into(),
            fields: [("hypothesis", "sentence2"), ("premise", "sentence1")]
                .iter()
                .map(|(k, c)| (k.to_string(), c.to_string()))
                .collect(),
            label: None,
        },
        128,
    ));
    // WMT English→Romanian / French in the Hugging Face JSON Lines layout
    // ({"translation": {"en": …, "ro": …}}), as transformers' fixtures.
    for (name, lang, what) in [
        ("wmt16_enro", "ro", "WMT16 English→Romanian"),
        ("wmt14_enfr", "fr", "WMT14 English→French"),
        ("wmt15_enfr", "fr", "WMT15 English→French"),
    ] {
        v.push(files_task(
            name,
            &format!("{what}: `translate English to {}: …` (JSON Lines: translation.en / translation.{lang})", if lang == "ro" { "Romanian" } else { "French" }),
            FileFormat::Jsonl,
            &[("train", "train.json*"), ("validation", "val.json*|validation.json*"), ("test", "test.json*")],
            TextFormat::Translate {
                source_language: "en".into(),
                target_language: lang.into(),
                source: "translation.en".into(),
                target: format!("translation.{lang}"),
            },
            (512, 128),
        ));
    }
    let squad_splits = [
        ("train", "train-v1.1.json"),
        ("validation", "dev-v1.1.json"),
    ];
    v.push(files_task(
        "squad_v010_allanswers",
        "SQuAD v1.1: `question: … context: …` with T5's punctuation padding → the first answer",
        FileFormat::SquadJson,
        &squad_splits,
        TextFormat::Squad {
            include_context: true,
        },
        (512, 128),
    ));
    v.push(files_task(
        "squad_v010_context_free",
        "SQuAD v1.1 without context: `squad trivia question: …`",
        FileFormat::SquadJson,
        &squad_splits,
        TextFormat::Squad {
            include_context: false,
        },
        (512, 128),
    ));
    v.push(files_task(
        "wmt_t2t_ende",
        "WMT English→German: `translate English to German: …` (OpenNMT layout: src-*.txt / tgt-*.txt)",
        FileFormat::ParallelText { source_marker: "src".into(), target_marker: "tgt".into() },
        &[("train", "src-train.txt"), ("validation", "src-val.txt")],
        TextFormat::Translate {
            source_language: "en".into(),
            target_language: "de".into(),
            source: "source".into(),
            target: "target".into(),
        },
        (512, 128),
    ));
    v.push(files_task(
        "cnn_dailymail",
        "CNN/DailyMail: `summarize: <article>` → highlights (tfds layout: url_lists/all_{train,val,test}.txt pick <sha1(url)>.story files)",
        FileFormat::CnnUrlList {
            stories: ["../cnn_stories", "../cnn/stories", "../dailymail/stories", "../dm_stories"]
                .map(String::from)
                .to_vec(),
        },
        &[
            ("train", "url_lists/all_train.txt|all_train.txt"),
            ("validation", "url_lists/all_val.txt|all_val.txt"),
            ("test", "url_lists/all_test.txt|all_test.txt"),
        ],
        TextFormat::Summarize { article: "article".into(), summary: "highlights".into() },
        (512, 128),
    ));
    v
}

fn glue_tsv_tasks() -> Vec<Task> {
    let std_splits = [
        ("train", "train.tsv"),
        ("validation", "dev.tsv"),
        ("test", "test.tsv"),
    ];
    let s12 = [("sentence1", "sentence1"), ("sentence2", "sentence2")];
    let stsb = |classes: u32| TextFormat::Stsb {
        classes,
        sentence1: "sentence1".into(),
        sentence2: "sentence2".into(),
        score: "score".into(),
    };
    vec![
        tsv_task(
            "glue_rte",
            "GLUE RTE: `rte sentence1: … sentence2: …` → entailment / not_entailment",
            &std_splits,
            glue_format("rte", &s12, "label"),
            128,
        ),
        tsv_task(
            "glue_wnli",
            "GLUE WNLI: `wnli sentence1: … sentence2: …`",
            &std_splits,
            glue_format("wnli", &s12, "label"),
            128,
        ),
        tsv_task(
            "glue_qnli",
            "GLUE QNLI: `qnli question: … sentence: …`",
            &std_splits,
            glue_format(
                "qnli",
                &[("question", "question"), ("sentence", "sentence")],
                "label",
            ),
            128,
        ),
        tsv_task(
            "glue_sst2",
            "GLUE SST-2: `sst2 sentence: …` → negative / positive",
            &std_splits,
            glue_format("sst2", &[("sentence", "sentence")], "label"),
            128,
        ),
        tsv_task(
            "glue_qqp",
            "GLUE QQP: `qqp question1: … question2: …` → not_duplicate / duplicate",
            &std_splits,
            glue_format(
                "qqp",
                &[("question1", "question1"), ("question2", "question2")],
                "is_duplicate",
            ),
            128,
        ),
        tsv_task(
            "glue_mnli",
            "GLUE MNLI: `mnli hypothesis: … premise: …` (validation = matched)",
            &[
                ("train", "train.tsv"),
                ("validation", "dev_matched.tsv"),
                ("validation_mismatched", "dev_mismatched.tsv"),
                ("test", "test_matched.tsv"),
                ("test_mismatched", "test_mismatched.tsv"),
            ],
            glue_format(
                "mnli",
                &[("hypothesis", "sentence2"), ("premise", "sentence1")],
                "gold_label",
            ),
            128,
        ),
        tsv_task(
            "glue_stsb",
            "GLUE STS-B, score bucketed into 21 classes (0.0, 0.25, …, 5.0)",
            &std_splits,
            stsb(21),
            128,
        ),
        tsv_task(
            "glue_stsb_t5",
            "GLUE STS-B exactly as T5: 26 classes (0.0, 0.2, …, 5.0)",
            &std_splits,
            stsb(26),
            128,
        ),
    ]
}
