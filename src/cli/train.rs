//! `t5mix train` and `t5mix eval`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use t5mix_pipeline::features::{Packing, SequenceLength};
use t5mix_pipeline::manifest::VocabularyInfo;
use t5mix_pipeline::progress::counter;
use t5mix_tasks::{Evaluator, Registry};
use t5mix_trainer::eval::generate;
use t5mix_trainer::optim::{OptimizerConfig, Schedule};
use t5mix_trainer::train::{ModelInit, StepLog, TrainDevice, TrainOptions, Trainer};
use t5mix_trainer::weights::load_model;
use t5mix_trainer::{Dev, LossNormalization, T5};

/// Train a T5 model from example shards (`t5mix build` output).
///
/// Pretraining defaults follow t5x: Adafactor, `rsqrt` (0.01 for 10k steps),
/// z-loss 1e-4, summed loss, packing. Fine-tune with `--init-from DIR
/// --schedule constant:0.001`; continue an interrupted run with `--resume`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  t5mix train --data out/demo/demo_mix --model tiny --steps 200 \
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
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    steps: u64,
    /// Stop after this many steps of this invocation (a later --resume goes on).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    stop_after: Option<u64>,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    batch_size: u32,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    grad_accum: u32,
    /// Feature lengths, e.g. inputs=512,targets=114.
    #[arg(long, default_value_t = SequenceLength::PRETRAINING.to_string())]
    sequence_length: String,
    /// Packing: greedy (seqio), ffd (first-fit decreasing) or none.
    #[arg(long, default_value = "greedy")]
    packing: Packing,
    /// Shuffle buffer in examples (0: file order).
    #[arg(long, default_value_t = TrainOptions::DEFAULT_SHUFFLE_BUFFER, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    shuffle_buffer: u32,
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
    loss_normalization: LossNormalization,
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
    #[arg(long, default_value_t = TrainOptions::DEFAULT_CHECKPOINT_EVERY)]
    checkpoint_every: u64,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    keep_checkpoints: u32,
    /// Steps between evaluations (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Held-out batches per evaluation.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    eval_batches: u32,
    /// Train on folders without a manifest.json (partial or foreign shards).
    #[arg(long)]
    allow_partial: bool,
    /// Where the step runs: cpu; cuda or cuda:N (an NVIDIA GPU: the whole
    /// step on it, no CUDA build needed); cpu-flat (the GPU's step code on
    /// the CPU, to check a GPU run's numbers).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The GPU's products: tf32 (default), f32 (IEEE) or bf16 (bf16
    /// operands, f32 sums, weights and optimizer state).
    #[arg(long)]
    precision: Option<String>,
    /// Tasks to score (greedy decoding + metric) at each evaluation.
    #[arg(long, num_args = 1..)]
    eval_task: Vec<String>,
    #[command(flatten)]
    task_eval: TaskEvalArgs,
}

/// Where evaluation tasks come from and how they are decoded.
#[derive(Debug, Args)]
pub struct TaskEvalArgs {
    /// The tasks' input folders (as for `t5mix build --input`).
    #[arg(long = "task-input", num_args = 1..)]
    input: Vec<String>,
    /// SentencePiece model (to encode inputs and decode predictions).
    #[arg(long, value_name = "FILE")]
    vocab: Option<PathBuf>,
    /// Sentinels added to the vocabulary (default: as the model's training data).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    extra_ids: Option<u32>,
    /// Split to evaluate.
    #[arg(long, default_value = "validation")]
    split: String,
    /// At most this many examples per task.
    #[arg(long)]
    max_examples: Option<usize>,
    /// Longest generated output (tokens).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_output_length: u32,
    /// Rows per decoding batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    eval_batch_size: u32,
}

impl TaskEvalArgs {
    fn evaluator(
        &self,
        tasks: &[String],
        reg: &Registry,
        model: Option<&VocabularyInfo>,
    ) -> Result<Option<Evaluator>> {
        let (v, x, n) = (self.vocab.as_deref(), self.extra_ids, self.max_examples);
        Ok(Evaluator::load(
            &reg.tasks,
            tasks,
            &self.input,
            &self.split,
            v,
            x,
            model,
            n,
        )?)
    }

    fn predict<'a>(&'a self, m: &'a T5<Dev>) -> impl FnMut(&[Vec<u32>]) -> Vec<Vec<u32>> + 'a {
        move |inputs| {
            generate(
                m,
                inputs,
                self.eval_batch_size as usize,
                self.max_output_length as usize,
            )
        }
    }
}

fn options(a: &TrainArgs) -> Result<TrainOptions> {
    let lengths = SequenceLength::parse_over(SequenceLength::PRETRAINING, &a.sequence_length)
        .map_err(|e| anyhow::anyhow!("--sequence-length: {e}"))?;
    let model = match &a.init_from {
        Some(d) => ModelInit::From(d.clone()),
        None => ModelInit::fresh(&a.model)?,
    };
    let mut o = TrainOptions::new(model, a.data.clone(), a.out.clone(), a.steps);
    o.eval = a.eval_data.clone();
    o.inputs_length = lengths.inputs;
    o.targets_length = lengths.targets;
    o.batch_size = a.batch_size as usize;
    o.grad_accum = a.grad_accum as usize;
    o.packing = a.packing;
    o.shuffle_buffer = a.shuffle_buffer as usize;
    o.optimizer = OptimizerConfig::named(&a.optimizer)?;
    o.schedule = Schedule::parse(&a.schedule, a.steps)?;
    o.z_loss = a.z_loss;
    o.label_smoothing = a.label_smoothing;
    o.loss_normalization = a.loss_normalization;
    o.clip_grad_norm = a.clip_grad_norm;
    o.dropout = a.dropout;
    o.seed = a.seed;
    o.checkpoint_every = a.checkpoint_every;
    o.keep_checkpoints = a.keep_checkpoints as usize;
    o.eval_every = a.eval_every;
    o.eval_batches = a.eval_batches as usize;
    o.allow_partial = a.allow_partial;
    o.device = TrainDevice::parse(&a.device, a.precision.as_deref())?;
    Ok(o)
}

pub fn train(a: TrainArgs, reg: &Registry, quiet: bool) -> Result<()> {
    let o = options(&a)?;
    let dev = Dev::default();
    t5mix_trainer::Runtime::default().install(&dev);
    let mut trainer = Trainer::new(o, &dev, a.resume)?;
    let evaluator = a
        .task_eval
        .evaluator(&a.eval_task, reg, trainer.vocabulary.as_ref())?;
    eprintln!("{}", trainer.describe());
    let bar = counter(quiet, "train", "steps");
    bar.set_length(a.steps);
    bar.set_position(trainer.start_step());
    let mut on_step = |l: &StepLog| {
        bar.set_position(l.step);
        bar.set_message(l.to_string());
    };
    let mut hook = |_: u64, m: &T5<Dev>| -> t5mix_trainer::Result<serde_json::Value> {
        let e = evaluator.as_ref().expect("eval tasks");
        let scores = e
            .evaluate(&mut a.task_eval.predict(m))
            .map_err(|e| t5mix_trainer::TrainError::Config(e.to_string()))?;
        Ok(e.metrics_json(&scores))
    };
    let hook_ref: Option<&mut t5mix_trainer::train::EvalHook<'_, Dev>> =
        evaluator.is_some().then_some(&mut hook);
    let s = trainer.run(a.stop_after, &mut on_step, hook_ref)?;
    bar.finish();
    println!("{s}");
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

pub fn eval(a: EvalArgs, reg: &Registry) -> Result<()> {
    let dev = Dev::default();
    t5mix_trainer::Runtime::default().install(&dev);
    let model = load_model(&a.checkpoint, &dev)?;
    let recorded = VocabularyInfo::of_model(&a.checkpoint)?;
    let e = a
        .task_eval
        .evaluator(&a.task, reg, recorded.as_ref())?
        .expect("tasks given");
    model.check_vocabulary(e.vocab.vocab_size() as usize)?;
    let started = std::time::Instant::now();
    let scores = e.evaluate(&mut a.task_eval.predict(&model))?;
    let secs = started.elapsed().as_secs_f64();
    print!("{}", e.table(&scores));
    let n: usize = e.sets.iter().map(|s| s.examples.len()).sum();
    println!(
        "{n} examples in {secs:.1} s ({:.1} examples/s)",
        n as f64 / secs.max(1e-9)
    );
    let text = serde_json::to_string_pretty(&e.report(&a.checkpoint, &scores))?;
    match &a.out {
        Some(p) => t5mix_pipeline::atomic::write_atomic(p, text.as_bytes())?,
        None => println!("{text}"),
    }
    if let Some(p) = &a.predictions {
        e.write_predictions(&scores, p)?;
    }
    Ok(())
}
