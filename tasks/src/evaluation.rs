//! Evaluation (seqio's `Evaluator`): a task's examples through its
//! preprocessors, predictions from a function the caller gives (the trainer's
//! greedy decoding, so `t5mix-trainer` never depends on this crate), then the
//! task's postprocessor and metrics.

use std::path::Path;

use t5mix_pipeline::manifest::VocabularyInfo;
use t5mix_pipeline::vocab::{Vocabulary, DEFAULT_EXTRA_IDS};

use crate::error::{Result, TaskError};
use crate::metrics::{Metric, Postprocessor, Value};
use crate::supervised::Row;
use crate::task::{Task, TaskRegistry};

/// One example to score.
#[derive(Debug, Clone)]
pub struct EvalExample {
    /// Encoder ids (after the task's preprocessors, EOS included).
    pub inputs: Vec<u32>,
    /// The inputs text.
    pub inputs_text: String,
    /// The targets text.
    pub target_text: String,
    /// The postprocessed target (e.g. all of SQuAD's answers).
    pub target: Value,
    /// The example's row (what postprocessors may look at).
    pub row: Row,
}

/// A task's evaluation examples with its postprocessor and metrics.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// Task name.
    pub task: String,
    /// Examples, in source order.
    pub examples: Vec<EvalExample>,
    /// Applied to each decoded prediction.
    pub postprocessor: Postprocessor,
    /// The task's metrics.
    pub metrics: Vec<Metric>,
}

impl EvalSet {
    /// Named scores of decoded predictions (one per example).
    pub fn score(&self, predictions: &[String]) -> Result<Vec<(String, f64)>> {
        let targets: Vec<Value> = self.examples.iter().map(|e| e.target.clone()).collect();
        let preds: Vec<Value> = self
            .examples
            .iter()
            .zip(predictions)
            .map(|(e, p)| self.postprocessor.apply(p, &e.row, false))
            .collect();
        let mut out = Vec::new();
        for m in &self.metrics {
            out.extend(
                m.compute(&targets, &preds)
                    .map_err(|e| TaskError::task(&self.task, format!("metric: {e}")))?,
            );
        }
        Ok(out)
    }

    /// The majority baseline: the most frequent target text (the first in
    /// byte order among equals) predicted for every example, and its scores.
    pub fn majority_baseline(&self) -> Result<(String, Vec<(String, f64)>)> {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for e in &self.examples {
            *counts.entry(e.target_text.as_str()).or_default() += 1;
        }
        let best = counts
            .iter()
            .fold(("", 0), |b, (t, &n)| if n > b.1 { (t, n) } else { b })
            .0
            .to_string();
        let scores = self.score(&vec![best.clone(); self.examples.len()])?;
        Ok((best, scores))
    }
}

impl Task {
    /// The examples of `split` under `inputs` (at most `max_examples`),
    /// encoded with `vocab` through the task's preprocessors, with their
    /// postprocessed targets.
    pub fn eval_set(
        &self,
        inputs: &[String],
        split: &str,
        vocab: &Vocabulary,
        max_examples: Option<usize>,
    ) -> Result<EvalSet> {
        let metrics = self.effective_metrics();
        if self.objective().is_some() || metrics.is_empty() {
            return Err(TaskError::task(
                &self.name,
                "has no metric to score (an unsupervised objective, or a test-only task)",
            ));
        }
        let postprocessor = self.effective_postprocessor();
        let chain = self.chain(split, vocab, 0, None);
        let mut examples = Vec::new();
        let max = max_examples.unwrap_or(usize::MAX);
        for (i, file) in self
            .source
            .split_files(&self.name, split, inputs)?
            .iter()
            .enumerate()
        {
            if examples.len() >= max {
                break;
            }
            for e in chain.run(i, file)?.1 {
                if examples.len() >= max {
                    break;
                }
                let row = e.row.expect("no denoising step");
                let text = |k: &str| row.get(k).cloned().unwrap_or_default();
                let (inputs_text, target_text) = (text("inputs"), text("targets"));
                examples.push(EvalExample {
                    inputs: e.tokens.inputs,
                    target: postprocessor.apply(&target_text, &row, true),
                    inputs_text,
                    target_text,
                    row,
                });
            }
        }
        if examples.is_empty() {
            return Err(TaskError::task(
                &self.name,
                format!("split {split} has no examples"),
            ));
        }
        Ok(EvalSet {
            task: self.name.clone(),
            examples,
            postprocessor,
            metrics,
        })
    }
}

/// One task's result.
#[derive(Debug, Clone)]
pub struct TaskScores {
    /// Task name.
    pub task: String,
    /// Named scores.
    pub metrics: Vec<(String, f64)>,
    /// Decoded predictions, one per example.
    pub predictions: Vec<String>,
    /// The majority baseline ([`EvalSet::majority_baseline`]): its
    /// prediction and scores.
    pub baseline: (String, Vec<(String, f64)>),
}

/// Generates output ids for a batch of encoder inputs (e.g. the trainer's
/// greedy decoding).
pub type PredictFn<'a> = dyn FnMut(&[Vec<u32>]) -> Vec<Vec<u32>> + 'a;

/// Evaluates tasks with a predict function: `ids of a batch of inputs →
/// ids of the outputs`.
#[derive(Debug)]
pub struct Evaluator {
    /// Vocabulary to decode predictions.
    pub vocab: Vocabulary,
    /// Split evaluated.
    pub split: String,
    /// One set per task.
    pub sets: Vec<EvalSet>,
}

impl Evaluator {
    /// The evaluation sets of `tasks` from the registry.
    pub fn new(
        registry: &TaskRegistry,
        tasks: &[String],
        inputs: &[String],
        split: &str,
        vocab: Vocabulary,
        max_examples: Option<usize>,
    ) -> Result<Self> {
        let sets = tasks
            .iter()
            .map(|t| {
                registry
                    .task(t)?
                    .eval_set(inputs, split, &vocab, max_examples)
            })
            .collect::<Result<_>>()?;
        Ok(Evaluator {
            vocab,
            split: split.into(),
            sets,
        })
    }

    /// As [`Evaluator::new`], loading the vocabulary — with the sentinels
    /// `extra_ids`, else those the model's training data `recorded` (whose
    /// md5 it must have), else T5's 100; none when no task is asked for, an
    /// error naming what is missing otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        registry: &TaskRegistry,
        tasks: &[String],
        inputs: &[String],
        split: &str,
        vocab: Option<&Path>,
        extra_ids: Option<u32>,
        recorded: Option<&VocabularyInfo>,
        max_examples: Option<usize>,
    ) -> Result<Option<Self>> {
        if tasks.is_empty() {
            return Ok(None);
        }
        let missing = |what: &str| TaskError::Option {
            option: what.into(),
            message: "task evaluation needs it".into(),
        };
        let vocab = vocab.ok_or_else(|| missing("--vocab (the SentencePiece model)"))?;
        if inputs.is_empty() {
            return Err(missing("--task-input (the tasks' input folders)"));
        }
        let vocab = match (extra_ids, recorded) {
            (None, Some(info)) => info.load(vocab)?,
            (e, _) => Vocabulary::load(vocab, e.unwrap_or(DEFAULT_EXTRA_IDS))?,
        };
        Self::new(registry, tasks, inputs, split, vocab, max_examples).map(Some)
    }

    /// `{checkpoint, split, tasks: {task: {examples, metric: value}}}`.
    pub fn report(&self, checkpoint: &Path, scores: &[TaskScores]) -> serde_json::Value {
        serde_json::json!({
            "checkpoint": checkpoint, "split": self.split, "tasks": self.metrics_json(scores)
        })
    }

    /// Scores every task: `predict` gets all of a task's encoder inputs
    /// and returns the generated ids, one sequence each.
    pub fn evaluate(&self, predict: &mut PredictFn<'_>) -> Result<Vec<TaskScores>> {
        self.sets
            .iter()
            .map(|s| {
                let inputs: Vec<Vec<u32>> = s.examples.iter().map(|e| e.inputs.clone()).collect();
                let predictions: Vec<String> = predict(&inputs)
                    .iter()
                    .map(|ids| self.vocab.decode(ids))
                    .collect();
                Ok(TaskScores {
                    task: s.task.clone(),
                    metrics: s.score(&predictions)?,
                    predictions,
                    baseline: s.majority_baseline()?,
                })
            })
            .collect()
    }

    /// `{task: {examples, metric: value, …, majority_baseline:
    /// {prediction, metric: value, …}}}`.
    pub fn metrics_json(&self, scores: &[TaskScores]) -> serde_json::Value {
        let named = |metrics: &[(String, f64)]| {
            let mut t = serde_json::Map::new();
            for (k, v) in metrics {
                t.insert(k.clone(), (*v).into());
            }
            t
        };
        let mut m = serde_json::Map::new();
        for (s, r) in self.sets.iter().zip(scores) {
            let mut t = named(&r.metrics);
            t.insert("examples".into(), s.examples.len().into());
            let mut b = named(&r.baseline.1);
            b.insert("prediction".into(), r.baseline.0.clone().into());
            t.insert("majority_baseline".into(), b.into());
            m.insert(s.task.clone(), t.into());
        }
        m.into()
    }

    /// A table: task, examples, metrics, and the majority baseline's.
    pub fn table(&self, scores: &[TaskScores]) -> String {
        let list = |metrics: &[(String, f64)]| {
            let m: Vec<String> = metrics.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
            m.join("  ")
        };
        let mut out = format!(
            "{:<28} {:>8}  {:<32} majority baseline\n",
            "task", "examples", "metrics"
        );
        for (s, r) in self.sets.iter().zip(scores) {
            out += &format!(
                "{:<28} {:>8}  {:<32} {} ({:?})\n",
                s.task,
                s.examples.len(),
                list(&r.metrics),
                list(&r.baseline.1),
                r.baseline.0
            );
        }
        out
    }

    /// Writes every example's input, target and prediction as JSON Lines.
    pub fn write_predictions(&self, scores: &[TaskScores], path: &Path) -> Result<()> {
        let mut lines = String::new();
        for (s, r) in self.sets.iter().zip(scores) {
            for (e, p) in s.examples.iter().zip(&r.predictions) {
                lines += &serde_json::json!({
                    "task": s.task, "inputs": e.inputs_text, "target": e.target_text, "prediction": p
                })
                .to_string();
                lines.push('\n');
            }
        }
        t5mix_pipeline::atomic::write_atomic(path, lines.as_bytes())?;
        Ok(())
    }
}
