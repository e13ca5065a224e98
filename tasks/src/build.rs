//! The front door: a task builds its cache ([`Task::build_cache`]), a
//! mixture its shards ([`MixtureRegistry::build`]). A task's preprocessors
//! run here, source file by source file, through the pipeline's cache
//! engine (resume, workers, atomic shards, manifest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use t5mix_pipeline::cache::{self, CacheReport, CacheSpec, ExampleProducer, Worker};
use t5mix_pipeline::features::SequenceLength;
use t5mix_pipeline::manifest::{Manifest, MixtureManifest, TaskManifest};
use t5mix_pipeline::mixing::{build_mixture, MixSpec, TaskCache};
use t5mix_pipeline::preprocessors::{
    append_eos_after_trim, Denoiser, ExampleKey, ExampleRng, ShardCorruptor,
};
use t5mix_pipeline::shards::ShardExample;
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_pipeline::PipelineError;

use crate::error::{Result, TaskError};
use crate::mixture::MixtureRegistry;
use crate::supervised::{read_rows, Row};
use crate::task::{OutputFeatures, Preprocessor, Source, Task, TokenContext, Tokens};

/// How a task's cache is built.
#[derive(Debug, Clone)]
pub struct BuildOptions<'a> {
    /// The vocabulary of both features.
    pub vocab: &'a Vocabulary,
    /// Split to read.
    pub split: String,
    /// Seed of every example's random stream.
    pub seed: u64,
    /// Feature lengths (default: the task's).
    pub sequence_length: Option<SequenceLength>,
    /// Keep the text as `inputs_pretokenized` / `targets_pretokenized`.
    pub pretokenized: bool,
    /// Which source files this process builds.
    pub worker: Worker,
    /// Read clean-shard folders without a manifest (an interrupted clean).
    pub allow_partial: bool,
}

impl<'a> BuildOptions<'a> {
    /// The train split, seed 0, the task's lengths, one worker.
    pub fn new(vocab: &'a Vocabulary) -> Self {
        BuildOptions {
            vocab,
            split: "train".into(),
            seed: 0,
            sequence_length: None,
            pretokenized: false,
            worker: Worker::default(),
            allow_partial: false,
        }
    }
}

/// What [`Task::build_cache`] did (its `Display` is `t5mix build`'s summary).
#[derive(Debug, Clone)]
pub struct CacheBuild {
    /// Task name.
    pub task: String,
    /// Wall seconds.
    pub seconds: f64,
    /// Shards written and kept, documents read, statistics.
    pub report: CacheReport,
    /// The manifest, once every shard is there (one worker, or `finalize`).
    pub manifest: Option<TaskManifest>,
    /// Source files of the whole cache.
    pub sources: usize,
}

impl std::fmt::Display for CacheBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (r, secs) = (&self.report, self.seconds);
        write!(
            f,
            "build {}: {} shard(s) written, {} kept from an earlier run; {} documents -> {} \
             examples ({} input / {} target tokens) in {secs:.2} s ({:.0} examples/s)",
            self.task,
            r.written.len(),
            r.kept.len(),
            r.documents,
            r.stats.examples,
            r.stats.inputs_tokens,
            r.stats.targets_tokens,
            r.stats.examples as f64 / secs.max(1e-9)
        )?;
        match &self.manifest {
            Some(m) => write!(f, "\n{}", manifest_line(m)),
            None => write!(
                f,
                "\n  this worker's shards are done: run `--finalize` once all workers are"
            ),
        }
    }
}

/// One line on a task cache's manifest.
pub fn manifest_line(m: &TaskManifest) -> String {
    format!(
        "  manifest: {} shards, {} examples, max lengths {}/{}",
        m.shards.len(),
        m.stats.examples,
        m.stats.inputs_max_tokens,
        m.stats.targets_max_tokens
    )
}

/// One example after a task's preprocessors: its tokens and, until a
/// token step replaces examples (span corruption), the row it came from.
#[derive(Debug, Clone)]
pub struct Example {
    /// The features.
    pub tokens: Tokens,
    /// The row after the row-level steps (`inputs` / `targets` text and
    /// the other columns).
    pub row: Option<Row>,
}

impl Example {
    /// Text (the row's, else decoded) and ids of both features, as
    /// `t5mix tasks preview` shows them.
    pub fn describe(&self, vocab: &Vocabulary) -> String {
        let mut out = String::new();
        let features = [
            ("inputs", &self.tokens.inputs),
            ("targets", &self.tokens.targets),
        ];
        for (name, ids) in features {
            let text = match self.row.as_ref().and_then(|r| r.get(name)) {
                Some(t) => t.clone(),
                None => vocab.decode(ids),
            };
            out += &format!("{:<12} {text}\n", format!("{name}:"));
        }
        for (name, ids) in features {
            out += &format!("{:<12} {ids:?}\n", format!("{name} ids:"));
        }
        out
    }
}

/// A task's chain for one build: the task, split, vocabulary, features, seed.
pub(crate) struct Chain<'a> {
    pub task: &'a Task,
    pub split: &'a str,
    pub vocab: &'a Vocabulary,
    pub features: OutputFeatures,
    pub seed: u64,
}

impl Chain<'_> {
    fn source_rows(&self, path: &Path) -> Result<Vec<Row>> {
        Ok(match &self.task.source {
            Source::CleanShards {} => cache::read_clean_texts(path, self.split)?
                .into_iter()
                .map(|t| Row::from([("text".to_string(), t)]))
                .collect(),
            s @ Source::Files { .. } => {
                let format = s.file_format(self.split).expect("files source");
                read_rows(path, format)?
            }
        })
    }

    /// Source file `index` (`path`) through every preprocessor; returns the
    /// rows read and the examples.
    pub fn run(&self, index: usize, path: &Path) -> Result<(u64, Vec<Example>)> {
        let task = &self.task.name;
        let steps = &self.task.preprocessors;
        let at = steps
            .iter()
            .position(|p| matches!(p, Preprocessor::Tokenize))
            .ok_or_else(|| TaskError::task(task, "no tokenize step"))?;
        let rows = self.source_rows(path)?;
        let documents = rows.len() as u64;
        let row_err = |r: usize, message: String| TaskError::Row {
            path: path.display().to_string(),
            row: r + 1,
            message,
        };
        let mut out_rows = Vec::with_capacity(rows.len());
        for (r, mut row) in rows.into_iter().enumerate() {
            for p in &steps[..at] {
                row = match p {
                    Preprocessor::Rekey(map) => map
                        .iter()
                        .map(|(feature, column)| {
                            let v = row.get(column).cloned().ok_or_else(|| {
                                row_err(r, format!("rekey: no column {column:?}"))
                            })?;
                            Ok((feature.clone(), v))
                        })
                        .collect::<Result<Row>>()?,
                    Preprocessor::Text(f) => {
                        let (i, t) = f.format(&row, path, r + 1)?;
                        row.insert("inputs".into(), i);
                        row.insert("targets".into(), t);
                        row
                    }
                    Preprocessor::Rows(c) => c.f.map(&row).map_err(|m| row_err(r, m))?,
                    _ => unreachable!("validated: row steps come before tokenize"),
                };
            }
            if !row.contains_key("targets") {
                return Err(row_err(
                    r,
                    "no `targets` field after the row preprocessors".into(),
                ));
            }
            out_rows.push(row);
        }
        let texts: Vec<&str> = out_rows
            .iter()
            .flat_map(|r| {
                [
                    r.get("inputs").map_or("", String::as_str),
                    r["targets"].as_str(),
                ]
            })
            .collect();
        let ids = self.vocab.encode_batch(&texts);
        drop(texts);
        let mut examples: Vec<Example> = ids
            .chunks(2)
            .zip(out_rows)
            .map(|(p, row)| Example {
                tokens: Tokens {
                    inputs: p[0].clone(),
                    targets: p[1].clone(),
                },
                row: Some(row),
            })
            .collect();
        drop(ids);
        let eos = self.vocab.eos_id().unwrap_or(1);
        let l = self.features.sequence_length();
        for (k, p) in steps.iter().enumerate().skip(at + 1) {
            match p {
                Preprocessor::Denoise(objective) => {
                    let d = Denoiser::new(
                        *objective,
                        l.inputs,
                        l.targets,
                        self.vocab.vocab_size(),
                        self.vocab.extra_ids(),
                    )
                    .map_err(|source| TaskError::Preprocess {
                        task: task.clone(),
                        source,
                    })?;
                    let mut c = ShardCorruptor::new(&d, self.seed, task, index as u64);
                    c.append_eos = false;
                    let mut next = Vec::new();
                    c.run(
                        examples.iter().map(|e| e.tokens.targets.as_slice()),
                        |i, t| {
                            next.push(Example {
                                tokens: Tokens {
                                    inputs: i.to_vec(),
                                    targets: t.to_vec(),
                                },
                                row: None,
                            })
                        },
                    )
                    .map_err(|source| TaskError::Preprocess {
                        task: task.clone(),
                        source,
                    })?;
                    examples = next;
                }
                Preprocessor::Tokens(c) => {
                    let salt = format!("tokens.{k}");
                    examples.par_iter_mut().enumerate().try_for_each(|(j, e)| {
                        let key = ExampleKey {
                            seed: self.seed,
                            task,
                            shard: index as u64,
                            index: j as u64,
                        };
                        let mut cx = TokenContext {
                            rng: ExampleRng::new(key, &salt),
                            vocab: self.vocab,
                            features: &self.features,
                        };
                        c.f.map(&mut e.tokens, &mut cx).map_err(|m| {
                            row_err(j, format!("token preprocessor {:?}: {m}", c.name))
                        })
                    })?;
                }
                Preprocessor::AppendEosAfterTrim => {
                    for e in &mut examples {
                        for (v, f) in [
                            (&mut e.tokens.inputs, &self.features.inputs),
                            (&mut e.tokens.targets, &self.features.targets),
                        ] {
                            if f.add_eos {
                                append_eos_after_trim(v, f.length, eos);
                            } else {
                                v.truncate(f.length);
                            }
                        }
                    }
                }
                _ => unreachable!("validated: token steps come after tokenize"),
            }
        }
        for (j, e) in examples.iter().enumerate() {
            for (name, v, f) in [
                ("inputs", &e.tokens.inputs, &self.features.inputs),
                ("targets", &e.tokens.targets, &self.features.targets),
            ] {
                if v.len() > f.length {
                    return Err(row_err(
                        j,
                        format!(
                            "feature {name} has {} tokens, more than its length {} \
                             (end the preprocessors with append_eos_after_trim)",
                            v.len(),
                            f.length
                        ),
                    ));
                }
            }
        }
        Ok((documents, examples))
    }
}

struct Producer<'a> {
    chain: Chain<'a>,
    pretokenized: bool,
}

impl ExampleProducer for Producer<'_> {
    fn produce(
        &self,
        index: usize,
        input: &Path,
        emit: &mut dyn FnMut(ShardExample),
    ) -> t5mix_pipeline::Result<u64> {
        let (documents, examples) =
            self.chain
                .run(index, input)
                .map_err(|e| PipelineError::Config {
                    what: format!("task {}", self.chain.task.name),
                    message: e.to_string(),
                })?;
        for e in examples {
            let text = |r: &Row, k: &str| r.get(k).cloned().unwrap_or_default();
            emit(ShardExample {
                task: self.chain.task.name.clone(),
                inputs: e.tokens.inputs,
                targets: e.tokens.targets,
                pretokenized: match (&e.row, self.pretokenized) {
                    (Some(r), true) => Some((text(r, "inputs"), text(r, "targets"))),
                    _ => None,
                },
            });
        }
        Ok(documents)
    }

    fn describe(&self) -> String {
        match self.chain.task.objective() {
            Some(o) => format!("{o:?}"),
            None => "supervised text pairs".to_string(),
        }
    }
}

impl Task {
    /// The source files of a build, after checking what it reads: a split
    /// name fit for file names, and clean-shard folders that a complete
    /// `t5mix clean` wrote (a manifest, unless `allow_partial`) with pages
    /// of that split.
    fn build_inputs(&self, inputs: &[String], o: &BuildOptions<'_>) -> Result<Vec<PathBuf>> {
        let split = &o.split;
        if split.is_empty()
            || split.starts_with('.')
            || !split
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(TaskError::Option {
                option: "split".into(),
                message: format!("{split:?}: use letters, digits, '_', '-' and '.'"),
            });
        }
        if matches!(self.source, Source::CleanShards {}) {
            for dir in inputs.iter().map(Path::new).filter(|p| p.is_dir()) {
                let m = match Manifest::read(dir) {
                    Ok(Manifest::Clean(m)) => m,
                    Ok(other) => {
                        return Err(TaskError::task(
                            &self.name,
                            format!(
                                "{} holds {} shards, not clean text",
                                dir.display(),
                                other.kind()
                            ),
                        ))
                    }
                    Err(_) if o.allow_partial => continue,
                    Err(e) => {
                        return Err(TaskError::task(
                            &self.name,
                            format!("{e} (pass --allow-partial to read it anyway)"),
                        ))
                    }
                };
                if m.stats.pages_per_split.get(split).copied().unwrap_or(0) == 0 {
                    return Err(TaskError::task(
                        &self.name,
                        format!(
                            "{} has no pages of split {split:?} (it has {:?})",
                            dir.display(),
                            m.stats.pages_per_split
                        ),
                    ));
                }
            }
        }
        self.source.split_files(&self.name, split, inputs)
    }

    /// The chain of this task for a build with these options.
    pub(crate) fn chain<'a>(
        &'a self,
        split: &'a str,
        vocab: &'a Vocabulary,
        seed: u64,
        lengths: Option<SequenceLength>,
    ) -> Chain<'a> {
        Chain {
            task: self,
            split,
            vocab,
            features: self
                .output_features
                .with_lengths(lengths.unwrap_or(self.sequence_length())),
            seed,
        }
    }

    /// Builds this worker's shards of the task's cache from `inputs` (clean
    /// shards, or the folders holding the task's files) into `out`, and,
    /// with one worker, its manifest. `on_shard(i, n)` is called as each
    /// source file is done. An interrupted build resumes with the same bytes.
    pub fn build_cache(
        &self,
        inputs: &[String],
        out: &Path,
        o: &BuildOptions<'_>,
        on_shard: impl Fn(usize, usize) + Sync,
    ) -> Result<CacheBuild> {
        let started = std::time::Instant::now();
        let files = self.build_inputs(inputs, o)?;
        let producer = Producer {
            chain: self.chain(&o.split, o.vocab, o.seed, o.sequence_length),
            pretokenized: o.pretokenized,
        };
        let spec = self.cache_spec(&producer, o);
        let report = cache::build_cache(&spec, &files, out, o.worker, on_shard)?;
        let manifest = if o.worker.count == 1 {
            Some(cache::finalize(&spec, files.len(), out)?)
        } else {
            None
        };
        Ok(CacheBuild {
            task: self.name.clone(),
            seconds: started.elapsed().as_secs_f64(),
            report,
            manifest,
            sources: files.len(),
        })
    }

    /// Checks that every shard of a cache built by several workers is in
    /// `out` and writes its manifest.
    pub fn finalize_cache(
        &self,
        inputs: &[String],
        out: &Path,
        o: &BuildOptions<'_>,
    ) -> Result<TaskManifest> {
        let files = self.build_inputs(inputs, o)?;
        let producer = Producer {
            chain: self.chain(&o.split, o.vocab, o.seed, o.sequence_length),
            pretokenized: o.pretokenized,
        };
        Ok(cache::finalize(
            &self.cache_spec(&producer, o),
            files.len(),
            out,
        )?)
    }

    fn cache_spec<'a>(
        &'a self,
        producer: &'a Producer<'a>,
        o: &'a BuildOptions<'a>,
    ) -> CacheSpec<'a> {
        CacheSpec {
            task: &self.name,
            split: &o.split,
            seed: o.seed,
            examples: producer,
            vocab: o.vocab,
            sequence_length: producer.chain.features.sequence_length(),
        }
    }

    /// The first `n` examples of the split's first source file, as a build
    /// with these options makes them.
    pub fn preview(
        &self,
        inputs: &[String],
        o: &BuildOptions<'_>,
        n: usize,
    ) -> Result<Vec<Example>> {
        let files = self.build_inputs(inputs, o)?;
        let chain = self.chain(&o.split, o.vocab, o.seed, o.sequence_length);
        let mut examples = chain.run(0, &files[0])?.1;
        examples.truncate(n);
        Ok(examples)
    }
}

/// How big a mixture is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixtureSize {
    /// This many times the task caches' examples together.
    Epochs(f64),
    /// This many examples.
    Examples(u64),
}

/// How a mixture is built.
#[derive(Debug, Clone)]
pub struct MixtureOptions {
    /// Seed of the task choice per example.
    pub seed: u64,
    /// Its size.
    pub size: MixtureSize,
    /// Examples per shard.
    pub shard_examples: u64,
    /// Which shards this process builds.
    pub worker: Worker,
}

impl Default for MixtureOptions {
    fn default() -> Self {
        MixtureOptions {
            seed: 0,
            size: MixtureSize::Epochs(1.0),
            shard_examples: 100_000,
            worker: Worker::default(),
        }
    }
}

/// What [`MixtureRegistry::build`] did (its `Display` is `t5mix build`'s summary).
#[derive(Debug, Clone)]
pub struct MixtureBuild {
    /// Mixture name.
    pub name: String,
    /// Wall seconds.
    pub seconds: f64,
    /// Shards written now.
    pub written: Vec<PathBuf>,
    /// Examples in the mixture.
    pub examples: u64,
    /// Unnormalized rate per task.
    pub rates: BTreeMap<String, f64>,
    /// Sampling probability per task.
    pub probabilities: BTreeMap<String, f64>,
    /// The manifest, once every shard is there.
    pub manifest: Option<MixtureManifest>,
}

impl std::fmt::Display for MixtureBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "build mixture {}: {} examples from {} task(s), {} shard(s) written in {:.2} s",
            self.name,
            self.examples,
            self.probabilities.len(),
            self.written.len(),
            self.seconds
        )?;
        for (task, p) in &self.probabilities {
            write!(
                f,
                "\n  {task:<24} rate {:>12.3}  p {p:.4}",
                self.rates[task]
            )?;
        }
        Ok(())
    }
}

/// Largest mixture (examples): its task choices are computed up front.
pub const MAX_MIXTURE_EXAMPLES: u64 = 1 << 32;

impl MixtureRegistry {
    /// Samples the task caches in `caches` (folders with a manifest) by the
    /// rates of mixture `name` into shards in `out` (seqio's
    /// `sample_from_datasets`, deterministic per example: resumable and
    /// split over workers like a task cache).
    pub fn build(
        &self,
        name: &str,
        caches: &[PathBuf],
        out: &Path,
        o: &MixtureOptions,
    ) -> Result<MixtureBuild> {
        let bad = |option: &str, message: String| TaskError::Option {
            option: option.into(),
            message,
        };
        if o.shard_examples == 0 {
            return Err(bad("shard_examples", "must be at least 1".into()));
        }
        if let MixtureSize::Epochs(e) = o.size {
            if !(e.is_finite() && e > 0.0) {
                return Err(bad("epochs", format!("{e} is not a positive number")));
            }
        }
        let started = std::time::Instant::now();
        let mut loaded = BTreeMap::new();
        for dir in caches {
            let c = TaskCache::load(dir)?;
            loaded.insert(c.manifest.task.clone(), c);
        }
        let count = |t: &str| loaded.get(t).map(|c: &TaskCache| c.manifest.stats.examples);
        let rates = self.task_rates(name, &count)?;
        let probabilities = self.task_probabilities(name, &count)?;
        let total: u64 = loaded.values().map(|c| c.manifest.stats.examples).sum();
        let examples = match o.size {
            MixtureSize::Examples(n) => n,
            MixtureSize::Epochs(e) => (total as f64 * e).round() as u64,
        };
        if examples == 0 || examples > MAX_MIXTURE_EXAMPLES {
            return Err(bad(
                "examples",
                format!("{examples} examples: the mixture must have 1..={MAX_MIXTURE_EXAMPLES}"),
            ));
        }
        let spec = MixSpec {
            name,
            seed: o.seed,
            probabilities: &probabilities,
            rates: &rates,
            examples,
            shard_examples: o.shard_examples,
        };
        let written = build_mixture(&spec, &loaded, out, o.worker)?;
        let manifest = match Manifest::read(out) {
            Ok(Manifest::Mixture(m)) => Some(m),
            _ => None,
        };
        Ok(MixtureBuild {
            name: name.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            written,
            examples,
            rates,
            probabilities,
            manifest,
        })
    }
}
