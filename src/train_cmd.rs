//! `t5mix train` and `t5mix eval`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use t5mix_pipeline::features::Packing;
use t5mix_pipeline::preprocessors::append_eos_after_trim;
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::metrics::evaluate_task;
use t5mix_tasks::supervised::TextFormat;
use t5mix_tasks::{Preprocessing, Source};
use t5mix_trainer::eval::generate;
use t5mix_trainer::optim::{OptimizerConfig, Schedule};
use t5mix_trainer::train::{ModelInit, StepLog, TrainOptions, Trainer};
use t5mix_trainer::weights::load_model;
use t5mix_trainer::{Dev, T5Config, T5};

use crate::build_cmd::{parse_lengths, registry};

/// Train a T5 model from example shards (`t5mix build` output).
///
/// Pretraining defaults follow t5x: Adafactor, `rsqrt` (0.01 for 10k steps),
/// z-loss 1e-4, summed loss, packing. Fine-tune with `--init-from DIR
/// --schedule constant:0.001`; continue an interrupted run with `--resume`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  t5mix train --data out/demo_mixture --model tiny --steps 200 \
    --batch-size 8 --sequence-length inputs=128,targets=32 --out out/run"
)]
pub struct TrainArgs {
    /// Training shard folders or files.
    #[arg(long, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Held-out shard folders or files (loss per token at evaluations).
    #[arg(long, num_args = 1..)]
    eval_data: Vec<PathBuf>,
    /// Output folder: checkpoints/, metrics.jsonl, loss.svg, final/.
    #[arg(long)]
    out: PathBuf,
    /// Model: t5-v1_0-small, t5-v1_0-base, t5-v1_1-small, t5-v1_1-base,
    /// tiny, micro, or an HF config.json (or its folder).
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Start from saved weights (ours or HF transformers') with a fresh optimizer.
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    init_from: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Stop after this many steps of this invocation (a later --resume goes on).
    #[arg(long)]
    stop_after: Option<u64>,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Feature lengths, e.g. inputs=512,targets=114.
    #[arg(long, default_value = "inputs=512,targets=114")]
    sequence_length: String,
    /// Packing: greedy (seqio), ffd (first-fit decreasing) or none.
    #[arg(long, default_value = "greedy")]
    packing: String,
    /// Shuffle buffer in examples (0: file order).
    #[arg(long, default_value_t = 10_000)]
    shuffle_buffer: usize,
    /// adafactor (t5x defaults) or adamw.
    #[arg(long, default_value = "adafactor")]
    optimizer: String,
    /// rsqrt[:WARMUP], constant[:LR] or cosine:PEAK[:WARMUP].
    #[arg(long, default_value = "rsqrt")]
    schedule: String,
    /// z-loss coefficient.
    #[arg(long, default_value_t = 1e-4)]
    z_loss: f32,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// sum (t5x default), tokens (mean over real target tokens) or a number (e.g. 233472).
    #[arg(long, default_value = "sum")]
    loss_normalization: String,
    /// Clip gradients to this global L2 norm.
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// Dropout rate (default: the model configuration's).
    #[arg(long)]
    dropout: Option<f32>,
    /// Seed of initialisation, data order and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Steps between checkpoints (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    keep_checkpoints: usize,
    /// Steps between evaluations (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Held-out batches per evaluation.
    #[arg(long, default_value_t = 4)]
    eval_batches: usize,
    /// Tasks to score (greedy decoding + metric) at each evaluation.
    #[arg(long, num_args = 1..)]
    eval_task: Vec<String>,
    #[command(flatten)]
    task_eval: TaskEvalArgs,
}

/// Where evaluation tasks come from.
#[derive(Debug, Args)]
pub struct TaskEvalArgs {
    /// The tasks' input folders (as for `t5mix build --input`).
    #[arg(long = "task-input", num_args = 1..)]
    input: Vec<String>,
    /// SentencePiece model (to encode inputs and decode predictions).
    #[arg(long, value_name = "FILE")]
    vocab: Option<PathBuf>,
    /// TOML task files to add to the built-in tasks.
    #[arg(long, value_name = "FILE")]
    tasks_file: Vec<PathBuf>,
    /// Split to evaluate.
    #[arg(long, default_value = "validation")]
    split: String,
    /// At most this many examples per task.
    #[arg(long)]
    max_examples: Option<usize>,
    /// Longest generated output (tokens).
    #[arg(long, default_value_t = 64)]
    max_output_length: usize,
    /// Rows per decoding batch.
    #[arg(long, default_value_t = 32)]
    eval_batch_size: usize,
}

/// A task's evaluation set: encoded inputs and target texts.
struct EvalSet {
    name: String,
    format: TextFormat,
    inputs_text: Vec<String>,
    inputs: Vec<Vec<u32>>,
    targets: Vec<String>,
}

fn eval_sets(names: &[String], a: &TaskEvalArgs) -> Result<Option<(Vocabulary, Vec<EvalSet>)>> {
    if names.is_empty() {
        return Ok(None);
    }
    let vocab_path = a
        .vocab
        .as_ref()
        .context("task evaluation needs --vocab (the SentencePiece model)")?;
    if a.input.is_empty() {
        bail!("task evaluation needs --task-input (the tasks' input folders)");
    }
    let vocab = Vocabulary::load(vocab_path, 100)?;
    let reg = registry(&a.tasks_file)?;
    let mut sets = Vec::new();
    for name in names {
        let t = reg
            .get(name)
            .with_context(|| format!("no task {name:?} (see `t5mix tasks list`)"))?;
        if !t.is_supervised() || matches!(t.source, Source::CleanShards) {
            bail!("task {name} is not a supervised task with files: it has no metric to score");
        }
        // a Rust-preprocessed task is scored by exact match
        let format = match &t.preprocessing {
            Preprocessing::Supervised { format } => format.clone(),
            _ => TextFormat::Template {
                inputs: String::new(),
                targets: String::new(),
            },
        };
        let li = t.sequence_length.get("inputs").copied().unwrap_or(512);
        let mut set = EvalSet {
            name: name.clone(),
            format,
            inputs_text: Vec::new(),
            inputs: Vec::new(),
            targets: Vec::new(),
        };
        'files: for file in t
            .source
            .split_files(name, &a.split, &a.input)
            .map_err(anyhow::Error::msg)?
        {
            for (i, g) in t.text_pairs(&file, &a.split).map_err(anyhow::Error::msg)? {
                if a.max_examples.is_some_and(|m| set.inputs.len() >= m) {
                    break 'files;
                }
                let mut ids = vocab.encode(&i);
                append_eos_after_trim(&mut ids, li, 1);
                set.inputs_text.push(i);
                set.inputs.push(ids);
                set.targets.push(g);
            }
        }
        if set.inputs.is_empty() {
            bail!("task {name}: split {} has no examples", a.split);
        }
        sets.push(set);
    }
    Ok(Some((vocab, sets)))
}

/// Predictions and metrics of one task.
fn score(
    model: &T5<Dev>,
    vocab: &Vocabulary,
    set: &EvalSet,
    a: &TaskEvalArgs,
) -> (Vec<String>, Vec<(String, f64)>) {
    let out = generate(model, &set.inputs, a.eval_batch_size, a.max_output_length);
    let preds: Vec<String> = out.iter().map(|ids| vocab.decode(ids)).collect();
    let metrics = evaluate_task(&set.format, &set.targets, &preds);
    (preds, metrics)
}

fn metrics_json(sets: &[EvalSet], results: &[Vec<(String, f64)>]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (s, r) in sets.iter().zip(results) {
        let mut t = serde_json::Map::new();
        t.insert("examples".into(), s.inputs.len().into());
        for (k, v) in r {
            t.insert(k.clone(), (*v).into());
        }
        m.insert(s.name.clone(), t.into());
    }
    m.into()
}

fn packing(s: &str) -> Result<Packing> {
    Ok(match s {
        "greedy" => Packing::Greedy,
        "ffd" | "first-fit-decreasing" => Packing::FirstFitDecreasing,
        "none" => Packing::None,
        _ => bail!("--packing {s:?}: use greedy, ffd or none"),
    })
}

pub fn train(a: TrainArgs, quiet: bool) -> Result<()> {
    let lengths = parse_lengths(&a.sequence_length)?;
    let model = match &a.init_from {
        Some(d) => ModelInit::From(d.clone()),
        None => ModelInit::Fresh(T5Config::from_name_or_path(&a.model)?),
    };
    let mut o = TrainOptions::new(model, a.data.clone(), a.out.clone(), a.steps);
    o.eval = a.eval_data.clone();
    o.inputs_length = lengths.get("inputs").copied().unwrap_or(512);
    o.targets_length = lengths.get("targets").copied().unwrap_or(114);
    o.batch_size = a.batch_size;
    o.grad_accum = a.grad_accum;
    o.packing = packing(&a.packing)?;
    o.shuffle_buffer = a.shuffle_buffer;
    o.optimizer = OptimizerConfig::named(&a.optimizer)?;
    o.schedule = Schedule::parse(&a.schedule, a.steps)?;
    o.z_loss = a.z_loss;
    o.label_smoothing = a.label_smoothing;
    o.loss_normalization = a.loss_normalization.clone();
    o.clip_grad_norm = a.clip_grad_norm;
    o.dropout = a.dropout;
    o.seed = a.seed;
    o.checkpoint_every = a.checkpoint_every;
    o.keep_checkpoints = a.keep_checkpoints;
    o.eval_every = a.eval_every;
    o.eval_batches = a.eval_batches;
    let dev = Dev::default();
    t5mix_trainer::setup_device(&dev);
    let mut trainer = Trainer::new(o, &dev, a.resume)?;
    let sets = eval_sets(&a.eval_task, &a.task_eval)?;
    eprintln!(
        "model: {} parameters ({} {}), {} steps from step {}; {}",
        trainer.model.num_params(),
        trainer.model.cfg.feed_forward_proj,
        if trainer.model.cfg.tie_word_embeddings {
            "tied"
        } else {
            "untied"
        },
        a.steps,
        trainer.start_step(),
        if cfg!(feature = "cuda") {
            "on the GPU".to_string()
        } else {
            format!(
                "CPU, {} threads, matrix products in {}",
                rayon::current_num_threads(),
                if t5mix_trainer::kernels::uses_openblas() {
                    "OpenBLAS"
                } else {
                    "dfdx's gemm (install libopenblas-dev and rebuild for faster steps)"
                }
            )
        }
    );
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(a.steps);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]",
            )
            .expect("template"),
        );
        b.set_position(trainer.start_step());
        b
    };
    let mut on_step = |l: &StepLog| {
        bar.set_position(l.step);
        bar.set_message(format!(
            "loss/token {:.3}  lr {:.2e}  {:.0} tok/s{}",
            l.ce_per_token,
            l.lr,
            l.tokens as f64 / l.seconds.max(1e-9),
            l.eval_ce_per_token
                .map(|e| format!("  held-out {e:.3}"))
                .unwrap_or_default()
        ));
    };
    let targs = &a.task_eval;
    let mut hook = |_: u64, m: &T5<Dev>| -> t5mix_trainer::Result<serde_json::Value> {
        let (vocab, sets) = sets.as_ref().expect("eval tasks");
        let results: Vec<Vec<(String, f64)>> =
            sets.iter().map(|s| score(m, vocab, s, targs).1).collect();
        Ok(metrics_json(sets, &results))
    };
    let hook_ref: Option<&mut t5mix_trainer::train::EvalHook<'_, Dev>> = if sets.is_some() {
        Some(&mut hook)
    } else {
        None
    };
    let s = trainer.run(a.stop_after, &mut on_step, hook_ref)?;
    bar.finish();
    println!(
        "trained steps {}..{} of {}: {:.1} ms/step, {:.0} tokens/s, loss/token {:.3} -> {:.3}",
        s.start_step,
        s.steps,
        a.steps,
        s.ms_per_step,
        s.tokens_per_second,
        s.first_ce_per_token,
        s.last_ce_per_token
    );
    if let (Some(e), Some(u), Some(o)) = (
        s.eval_ce_per_token,
        s.eval_unigram_ce_per_token,
        s.eval_unigram_oracle_ce_per_token,
    ) {
        println!(
            "held-out loss/token {e:.3} (unigram of the training targets: {u:.3}; \
             the held-out targets' own unigram entropy: {o:.3})"
        );
    }
    if s.steps == a.steps {
        println!("final model: {}", s.final_model.display());
    }
    println!(
        "log: {}  plot: {}",
        a.out.join("metrics.jsonl").display(),
        a.out.join("loss.svg").display()
    );
    let summary = serde_json::to_vec_pretty(&s)?;
    std::fs::write(a.out.join("summary.json"), summary)?;
    Ok(())
}

/// Score a checkpoint on tasks: greedy decoding (batched, KV cache), the
/// task's postprocessor and metrics.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  t5mix eval --checkpoint out/run/final --task glue_rte \
    --task-input ../shared/data/glue-hf-dummy/rte --vocab spiece.model"
)]
pub struct EvalArgs {
    /// A model folder (config.json + model.safetensors): ours or HF transformers'.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Tasks to score.
    #[arg(long, required = true, num_args = 1..)]
    task: Vec<String>,
    #[command(flatten)]
    task_eval: TaskEvalArgs,
    /// Write the scores as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write every example's input, target and prediction as JSONL here.
    #[arg(long)]
    predictions: Option<PathBuf>,
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let dev = Dev::default();
    t5mix_trainer::setup_device(&dev);
    let model = load_model(&a.checkpoint, &dev)?;
    let (vocab, sets) = eval_sets(&a.task, &a.task_eval)?.expect("tasks given");
    let mut results = Vec::new();
    let mut lines = String::new();
    let started = std::time::Instant::now();
    for s in &sets {
        let (preds, metrics) = score(&model, &vocab, s, &a.task_eval);
        for ((i, t), p) in s.inputs_text.iter().zip(&s.targets).zip(&preds) {
            lines.push_str(
                &serde_json::json!({"task": s.name, "inputs": i, "target": t, "prediction": p})
                    .to_string(),
            );
            lines.push('\n');
        }
        results.push(metrics);
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{:<28} {:>8}  metrics", "task", "examples");
    for (s, r) in sets.iter().zip(&results) {
        let m: Vec<String> = r.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        println!("{:<28} {:>8}  {}", s.name, s.inputs.len(), m.join("  "));
    }
    let n: usize = sets.iter().map(|s| s.inputs.len()).sum();
    println!(
        "{n} examples in {secs:.1} s ({:.1} examples/s)",
        n as f64 / secs.max(1e-9)
    );
    let mut report = BTreeMap::new();
    report.insert("checkpoint", serde_json::json!(a.checkpoint));
    report.insert("split", serde_json::json!(a.task_eval.split));
    report.insert("tasks", metrics_json(&sets, &results));
    let text = serde_json::to_string_pretty(&report)?;
    match &a.out {
        Some(p) => std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?,
        None => println!("{text}"),
    }
    if let Some(p) = &a.predictions {
        std::fs::write(p, lines).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
