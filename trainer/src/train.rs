//! The training loop: batches from shards, loss, gradient accumulation,
//! clipping, the optimizer and schedule, checkpoints (atomic, keep the last
//! K), exact resume, held-out loss, a JSONL metrics log and a loss plot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use t5mix_pipeline::atomic::write_atomic;
use t5mix_pipeline::features::SequenceLength;
use t5mix_pipeline::manifest::{check_example_folders, FolderCheck, VocabularyInfo};

use crate::config::T5Config;
use crate::data::{shard_files, BatchStream, DataConfig, Prefetch};
use crate::device::products::Precision;
use crate::device::step::{DeviceStep, TrainStep};
use crate::error::{Result, TrainError};
use crate::model::{Batch, Dropout, LossConfig, LossNormalization, LossParts, T5};
use crate::optim::{clip_global_norm, Optimizer, OptimizerConfig, Schedule};
use crate::weights::{decode_safetensors, encode_safetensors, load_model, save_model};

/// Training batches read ahead on a background thread (the micro-batches
/// of the next step or two).
const PREFETCH_BATCHES: usize = 4;

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelInit {
    /// A fresh model of this shape, initialised from the seed.
    Fresh(T5Config),
    /// A fresh model of a named shape ([`T5Config::named`]) whose embedding
    /// rows follow the data: its vocabulary's size (from the manifests)
    /// rounded up to 128, as t5x sizes them (32128 for T5's 32100 ids).
    Named(String),
    /// Saved weights (ours or HF transformers'), with a fresh optimizer and schedule.
    From(PathBuf),
}

impl ModelInit {
    /// A fresh model from `--model`: an HF `config.json` (or its folder) as
    /// it is, or a name of [`T5Config::named`] sized to the data
    /// ([`ModelInit::Named`]).
    pub fn fresh(name_or_path: &str) -> Result<ModelInit> {
        if Path::new(name_or_path).exists() {
            return Ok(ModelInit::Fresh(T5Config::from_name_or_path(name_or_path)?));
        }
        T5Config::named(name_or_path)?;
        Ok(ModelInit::Named(name_or_path.to_string()))
    }
}

/// Where the training step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainDevice {
    /// The dfdx model on the build's device: the CPU with the fused CPU
    /// kernels (dfdx's CUDA device in a `--features cuda` build).
    #[default]
    Cpu,
    /// The GPU's step ([`crate::device::step`]: flat buffers, the optimizer
    /// on them) on the CPU, f32: to check a GPU run's numbers, or the
    /// trainer's GPU path, on a machine without a GPU (slower than `Cpu`).
    CpuFlat,
    /// GPU `ordinal`: the flat step with our kernels and cuBLAS products in
    /// `precision`; parameters, gradients and optimizer state on the GPU.
    Cuda {
        /// The GPU's index.
        ordinal: usize,
        /// The products' number format.
        precision: Precision,
    },
}

impl TrainDevice {
    /// From `--device` (`cpu`, `cpu-flat`, `cuda`, `cuda:N`) and
    /// `--precision` (`f32`, `tf32`, `bf16`; GPU only, TF32 unless told).
    pub fn parse(device: &str, precision: Option<&str>) -> Result<Self> {
        let bad = |m: String| TrainError::Config(m);
        let cuda = |ordinal: usize| -> Result<Self> {
            let precision = match precision {
                Some(p) => p.parse().map_err(bad)?,
                None => Precision::default(),
            };
            Ok(TrainDevice::Cuda { ordinal, precision })
        };
        let on_cpu = |d: TrainDevice| match precision {
            Some(p) if p != "f32" => Err(bad(format!(
                "--precision {p}: the CPU computes in f32 (precision is for --device cuda)"
            ))),
            _ => Ok(d),
        };
        match device {
            "cpu" => on_cpu(TrainDevice::Cpu),
            "cpu-flat" => on_cpu(TrainDevice::CpuFlat),
            "cuda" => cuda(0),
            d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) if n < 1024 => cuda(n),
                _ => Err(bad(format!(
                    "--device {d:?}: one of cpu, cpu-flat, cuda, cuda:N (N a GPU index)"
                ))),
            },
        }
    }

    /// The flat step of `model` on this device, or None for the dfdx model.
    fn flat_step<D: Device<f32>>(
        self,
        model: &T5<D>,
        optimizer: &Optimizer,
    ) -> Result<Option<Box<dyn TrainStep>>> {
        if self == TrainDevice::Cpu {
            return Ok(None);
        }
        let flat = model.flat_model();
        let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
        let params = flat.layout.flatten(&host);
        let mut st: Box<dyn TrainStep> = match self {
            TrainDevice::Cpu => unreachable!("returned above"),
            TrainDevice::CpuFlat => Box::new(DeviceStep::cpu(flat, &params, optimizer.cfg)?),
            TrainDevice::Cuda { ordinal, precision } => {
                let ftz = crate::Runtime::default().flush_denormals;
                let cfg = (optimizer.cfg, precision);
                Box::new(DeviceStep::new(flat, &params, ordinal, cfg, ftz)?)
            }
        };
        if optimizer.step > 0 {
            st.load_optimizer_state(&optimizer.states, optimizer.step)?;
        }
        Ok(Some(st))
    }
}

/// Everything a training run is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Initial weights.
    pub model: ModelInit,
    /// Training shard files or folders.
    pub train: Vec<PathBuf>,
    /// Held-out shard files or folders for the evaluation loss.
    pub eval: Vec<PathBuf>,
    /// Output folder (checkpoints, metrics, plot, final model).
    pub out: PathBuf,
    /// Encoder length.
    pub inputs_length: usize,
    /// Decoder length.
    pub targets_length: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Pack examples into rows.
    pub packing: t5mix_pipeline::features::Packing,
    /// Shuffle buffer (examples).
    pub shuffle_buffer: usize,
    /// Optimizer steps in all.
    pub steps: u64,
    /// Optimizer.
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// z-loss coefficient.
    pub z_loss: f32,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// `sum`, `tokens` (mean over real target tokens) or a constant factor.
    pub loss_normalization: LossNormalization,
    /// Global gradient-norm clipping.
    pub clip_grad_norm: Option<f64>,
    /// Dropout rate (default: the configuration's).
    pub dropout: Option<f32>,
    /// Seed of initialisation, data order and dropout.
    pub seed: u64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Steps between held-out evaluations (0: only at the end).
    pub eval_every: u64,
    /// Batches of held-out data per evaluation.
    pub eval_batches: usize,
    /// Train on folders without a manifest (partial or foreign shards).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_partial: bool,
    /// Where the step runs (a run may resume on another device).
    #[serde(default)]
    pub device: TrainDevice,
}

impl TrainOptions {
    /// Examples in the shuffle buffer unless told otherwise.
    pub const DEFAULT_SHUFFLE_BUFFER: u32 = 10_000;
    /// Steps between checkpoints unless told otherwise.
    pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

    /// Defaults for a run of `steps` on `train` into `out` (t5x pretraining
    /// settings: Adafactor, rsqrt, z-loss 1e-4, summed loss, packing).
    pub fn new(model: ModelInit, train: Vec<PathBuf>, out: PathBuf, steps: u64) -> Self {
        TrainOptions {
            model,
            train,
            eval: Vec::new(),
            out,
            inputs_length: SequenceLength::PRETRAINING.inputs,
            targets_length: SequenceLength::PRETRAINING.targets,
            batch_size: 8,
            grad_accum: 1,
            packing: t5mix_pipeline::features::Packing::Greedy,
            shuffle_buffer: Self::DEFAULT_SHUFFLE_BUFFER as usize,
            steps,
            optimizer: OptimizerConfig::adafactor(),
            schedule: Schedule::Rsqrt {
                base: 1.0,
                warmup: 10_000,
            },
            z_loss: 1e-4,
            label_smoothing: 0.0,
            loss_normalization: LossNormalization::Sum,
            clip_grad_norm: None,
            dropout: None,
            seed: 0,
            checkpoint_every: Self::DEFAULT_CHECKPOINT_EVERY,
            keep_checkpoints: 3,
            eval_every: 0,
            eval_batches: 4,
            allow_partial: false,
            device: TrainDevice::Cpu,
        }
    }

    /// The encoder and decoder lengths.
    pub fn sequence_length(&self) -> SequenceLength {
        SequenceLength {
            inputs: self.inputs_length,
            targets: self.targets_length,
        }
    }

    /// Every value in its range before any work: a NaN, infinite or
    /// out-of-range rate, loss weight, dropout or clipping norm would train
    /// to NaN weights (or do nothing) without a word.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, v: f64, range: &str| {
            Err(TrainError::Config(format!("{what} {v}: must be {range}")))
        };
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return bad("z-loss", self.z_loss as f64, "a finite number ≥ 0");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label smoothing", self.label_smoothing as f64, "in [0, 1)");
        }
        if let Some(d) = self.dropout.filter(|d| !(0.0..1.0).contains(d)) {
            return bad("dropout", d as f64, "in [0, 1)");
        }
        if let Some(c) = self.clip_grad_norm.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return bad("gradient clipping norm", c, "a finite number > 0");
        }
        self.schedule.check()
    }

    fn loss_config(&self) -> Result<LossConfig> {
        Ok(LossConfig {
            z_loss: self.z_loss,
            label_smoothing: self.label_smoothing,
            normalization: self.loss_normalization,
        })
    }

    fn data_config(&self, epochs: Option<u64>) -> DataConfig {
        DataConfig {
            inputs_length: self.inputs_length,
            targets_length: self.targets_length,
            batch_size: self.batch_size,
            packing: self.packing,
            shuffle_buffer: self.shuffle_buffer,
            seed: self.seed,
            epochs,
            keep_partial: false,
        }
    }

    /// The options that must not change when a run is resumed.
    fn resume_key(&self) -> serde_json::Value {
        // paths as absolute ones: `out` and `./out` are one run
        let mut canonical = self.clone();
        let abs = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
        canonical.out = abs(&self.out);
        canonical.train = self.train.iter().map(abs).collect();
        if let ModelInit::From(d) = &self.model {
            canonical.model = ModelInit::From(abs(d));
        }
        let mut v = serde_json::to_value(&canonical).expect("options serialize");
        let m = v.as_object_mut().expect("object");
        for k in [
            "allow_partial",
            "steps",
            "checkpoint_every",
            "keep_checkpoints",
            "eval_every",
            "eval_batches",
            "eval",
            "device",
        ] {
            m.remove(k);
        }
        v
    }
}

/// One line of the metrics log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Optimizer steps done.
    pub step: u64,
    /// The optimized loss (after normalisation).
    pub loss: f64,
    /// Cross-entropy per real target token.
    pub ce_per_token: f64,
    /// z-loss per real target token.
    pub z_loss_per_token: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real target tokens in the step.
    pub target_tokens: u64,
    /// Encoder + decoder positions processed in the step (padding included).
    pub tokens: u64,
    /// Wall seconds of the step: its batches, gradients and update (not
    /// the evaluation or checkpoint that may follow it).
    pub seconds: f64,
    /// Held-out cross-entropy per target token, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_ce_per_token: Option<f64>,
    /// Task metrics from the evaluation hook, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_metrics: Option<serde_json::Value>,
}

impl StepLog {
    /// The step's scalars for TensorBoard: `train/*`, `eval/loss_per_token`
    /// and `eval/<task>/<metric>`.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let mut v = vec![
            ("train/loss".to_string(), self.loss),
            ("train/loss_per_token".to_string(), self.ce_per_token),
            ("train/z_loss_per_token".to_string(), self.z_loss_per_token),
            ("train/learning_rate".to_string(), self.lr),
            ("train/grad_norm".to_string(), self.grad_norm),
            (
                "train/tokens_per_second".to_string(),
                self.tokens as f64 / self.seconds.max(1e-9),
            ),
        ];
        if let Some(e) = self.eval_ce_per_token {
            v.push(("eval/loss_per_token".to_string(), e));
        }
        for (task, metrics) in self
            .task_metrics
            .as_ref()
            .and_then(|m| m.as_object())
            .into_iter()
            .flatten()
        {
            for (k, x) in metrics.as_object().into_iter().flatten() {
                if let Some(x) = x.as_f64().filter(|_| k != "examples") {
                    v.push((format!("eval/{task}/{k}"), x));
                }
            }
        }
        v
    }
}

impl std::fmt::Display for StepLog {
    /// One progress line: loss per token, learning rate, speed, held-out loss.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loss/token {:.3}  lr {:.2e}  {:.0} tok/s",
            self.ce_per_token,
            self.lr,
            self.tokens as f64 / self.seconds.max(1e-9)
        )?;
        if let Some(e) = self.eval_ce_per_token {
            write!(f, "  held-out {e:.3}")?;
        }
        Ok(())
    }
}

/// Called at evaluation steps with the step and the model; returns task
/// metrics for the log (e.g. greedy decoding + a task's metric).
pub type EvalHook<'a, D> = dyn FnMut(u64, &T5<D>) -> Result<serde_json::Value> + 'a;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Step the run started from (0, or the resumed checkpoint).
    pub start_step: u64,
    /// Steps completed in all.
    pub steps: u64,
    /// Number of parameters.
    pub parameters: usize,
    /// Mean cross-entropy per token over the first logged steps of this run.
    pub first_ce_per_token: f64,
    /// Mean cross-entropy per token over the last logged steps.
    pub last_ce_per_token: f64,
    /// Held-out cross-entropy per token at the end (with eval data).
    pub eval_ce_per_token: Option<f64>,
    /// Held-out cross-entropy of the training targets' unigram distribution
    /// (add-one smoothed): the baseline a model must beat.
    pub eval_unigram_ce_per_token: Option<f64>,
    /// Entropy of the held-out targets' own unigram distribution: the
    /// best any unigram model could do on them (an oracle, for reference).
    pub eval_unigram_oracle_ce_per_token: Option<f64>,
    /// Tokens per second (encoder + decoder positions) over the run's
    /// steps (their [`StepLog::seconds`]).
    pub tokens_per_second: f64,
    /// Milliseconds per optimizer step, the mean of the steps' (the first
    /// step's set-up included).
    pub ms_per_step: f64,
    /// The median step's milliseconds (a GPU's first step compiles its
    /// kernels and fills its memory pool).
    #[serde(default)]
    pub median_ms_per_step: f64,
    /// Wall seconds of the whole run: its steps, evaluations, checkpoints
    /// and final model.
    pub seconds: f64,
    /// The final model folder (HF layout).
    pub final_model: PathBuf,
    /// Steps the run is for.
    #[serde(default)]
    pub total_steps: u64,
    /// The metrics log (its plot is `loss.svg` beside it).
    #[serde(default)]
    pub log: PathBuf,
    /// On a GPU: the most device memory the run's buffers held at once
    /// (bytes; parameters, gradients, optimizer state and activations).
    #[serde(default)]
    pub gpu_peak_memory: Option<u64>,
}

impl std::fmt::Display for TrainSummary {
    /// What `t5mix train` prints at the end.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "trained steps {}..{} of {}: {:.1} ms/step (median {:.1}), {:.0} tokens/s, \
             {:.1} s in all, loss/token {:.3} -> {:.3}",
            self.start_step,
            self.steps,
            self.total_steps,
            self.ms_per_step,
            self.median_ms_per_step,
            self.tokens_per_second,
            self.seconds,
            self.first_ce_per_token,
            self.last_ce_per_token
        )?;
        if let (Some(e), Some(u), Some(o)) = (
            self.eval_ce_per_token,
            self.eval_unigram_ce_per_token,
            self.eval_unigram_oracle_ce_per_token,
        ) {
            writeln!(
                f,
                "held-out loss/token {e:.3} (unigram of the training targets: {u:.3}; \
                 the held-out targets' own unigram entropy: {o:.3})"
            )?;
        }
        if let Some(peak) = self.gpu_peak_memory {
            writeln!(
                f,
                "GPU memory: {} at most (parameters, gradients, optimizer state, activations)",
                crate::device::size(peak)
            )?;
        }
        if self.steps == self.total_steps {
            writeln!(f, "final model: {}", self.final_model.display())?;
        }
        write!(
            f,
            "log: {}  plot: {}",
            self.log.display(),
            self.log.with_file_name("loss.svg").display()
        )
    }
}

/// The state saved next to a checkpoint's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    batches_consumed: u64,
    optimizer_step: u64,
    options: serde_json::Value,
    tool: String,
}

fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("step_{step:08}"))
}

/// Checkpoints under `out`, oldest first.
pub fn list_checkpoints(out: &Path) -> Vec<(u64, PathBuf)> {
    let dir = out.join("checkpoints");
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let step = name.strip_prefix("step_")?.parse::<u64>().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// The model, optimizer and state of checkpoint `dir`: `Err` (outer) when
/// it was made with other options, `Ok(Err)` when it cannot be read.
#[allow(clippy::type_complexity)]
fn load_checkpoint<D: Device<f32>>(
    dir: &Path,
    opts: &TrainOptions,
    dev: &D,
) -> Result<std::result::Result<(T5<D>, Optimizer, TrainerState), TrainError>> {
    let state: TrainerState = match std::fs::read_to_string(dir.join("trainer_state.json"))
        .map_err(|e| TrainError::io(dir, e))
        .and_then(|t| {
            serde_json::from_str(&t).map_err(|e| TrainError::checkpoint(dir, e.to_string()))
        }) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    if state.options != opts.resume_key() {
        return Err(TrainError::checkpoint(
            dir,
            "the run was started with other options (model, data, batch, \
             optimizer, schedule, loss or seed); resume with the same ones",
        ));
    }
    let load = || -> Result<(T5<D>, Optimizer)> {
        let model = load_model(dir, dev)?;
        let names: Vec<String> = model.param_info().iter().map(|p| p.name.clone()).collect();
        let shapes: Vec<(usize, usize)> = model.params.iter().map(|p| *p.shape()).collect();
        let mut opt = Optimizer::new(opts.optimizer, &shapes);
        let path = dir.join("optimizer.safetensors");
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        opt.load_tensors(&names, &decode_safetensors(&bytes, &path)?)
            .map_err(|m| TrainError::checkpoint(&path, m))?;
        Ok((model, opt))
    };
    Ok(load().map(|(m, o)| (m, o, state)))
}

fn save_checkpoint<D: Device<f32>>(
    model: &T5<D>,
    vocabulary: Option<&VocabularyInfo>,
    opt: &Optimizer,
    state: &TrainerState,
    out: &Path,
    keep: usize,
) -> Result<PathBuf> {
    let final_dir = checkpoint_dir(out, state.step);
    let tmp = out
        .join("checkpoints")
        .join(format!(".tmp_step_{:08}", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    save_model(model, &tmp)?;
    if let Some(v) = vocabulary {
        v.write_to_model(&tmp)?;
    }
    let names: Vec<String> = model.param_info().iter().map(|p| p.name.clone()).collect();
    let bytes = encode_safetensors(&opt.to_tensors(&names), None)?;
    write_atomic(&tmp.join("optimizer.safetensors"), &bytes)?;
    let st = serde_json::to_vec_pretty(state).expect("state serializes");
    write_atomic(&tmp.join("trainer_state.json"), &st)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
    let all = list_checkpoints(out);
    if all.len() > keep.max(1) {
        for (_, p) in &all[..all.len() - keep.max(1)] {
            std::fs::remove_dir_all(p).map_err(|e| TrainError::io(p, e))?;
        }
    }
    Ok(final_dir)
}

/// Sums `add` into `acc`.
fn accumulate(acc: &mut [Vec<f32>], add: Vec<Vec<f32>>) {
    for (a, g) in acc.iter_mut().zip(add) {
        if a.is_empty() {
            *a = g;
        } else {
            a.iter_mut().zip(&g).for_each(|(x, y)| *x += y);
        }
    }
}

/// The loss configuration of one optimizer step over `micro`: a mean over
/// real target tokens is over the whole step's, not per micro-batch.
fn step_loss_config(micro: &[Batch], loss_cfg: &LossConfig) -> LossConfig {
    let total_tokens: usize = micro.iter().map(|b| b.target_tokens()).sum();
    match loss_cfg.normalization {
        LossNormalization::NumRealTargetTokens => LossConfig {
            normalization: LossNormalization::Constant(total_tokens.max(1) as f32),
            ..*loss_cfg
        },
        _ => *loss_cfg,
    }
}

impl StepLog {
    /// Adds one micro-batch's loss.
    fn add_micro(&mut self, loss: f64, parts: &LossParts, batch: &Batch) {
        self.loss += loss;
        self.ce_per_token += parts.cross_entropy;
        self.z_loss_per_token += parts.z_loss;
        self.target_tokens += parts.tokens as u64;
        self.tokens += (batch.batch * (batch.enc_len + batch.dec_len)) as u64;
    }

    /// The sums made per target token.
    fn per_token(mut self) -> Self {
        let n = self.target_tokens.max(1) as f64;
        self.ce_per_token /= n;
        self.z_loss_per_token /= n;
        self
    }
}

/// One optimizer step's forward and backward passes: the gradients summed
/// over the micro-batches, and the step's loss values.
pub fn compute_gradients<D: Device<f32>>(
    model: &T5<D>,
    micro: &[Batch],
    loss_cfg: &LossConfig,
    dropout: f32,
    seed: u64,
    step: u64,
) -> (Vec<Vec<f32>>, StepLog) {
    let cfg = step_loss_config(micro, loss_cfg);
    let mut acc: Vec<Vec<f32>> = vec![Vec::new(); model.params.len()];
    let mut log = StepLog {
        step,
        ..Default::default()
    };
    for (m, batch) in micro.iter().enumerate() {
        let mut drop = Dropout::new(dropout, seed, step, m as u64);
        let (l, parts) = model.forward_loss(batch, &mut drop, model.new_tape(), &cfg, 1.0);
        log.add_micro(l.retaped::<NoneTape>().as_vec()[0] as f64, &parts, batch);
        let grads = l.backward();
        accumulate(&mut acc, model.param_grads(grads));
    }
    (acc, log.per_token())
}

/// [`compute_gradients`] and the clipping on a flat step: the gradients
/// stay there; the log has the norm before clipping. Each micro-batch's
/// inputs go to the backend while the one before runs, and the `next`
/// step's first batch while this step's last runs.
pub fn flat_gradients(
    st: &mut dyn TrainStep,
    (micro, next): (&[Batch], Option<&Batch>),
    loss_cfg: &LossConfig,
    (dropout, seed, step): (f32, u64, u64),
    clip: Option<f64>,
) -> Result<StepLog> {
    let cfg = step_loss_config(micro, loss_cfg);
    let mut log = StepLog {
        step,
        ..Default::default()
    };
    st.zero_grads()?;
    for (m, batch) in micro.iter().enumerate() {
        let mut drop = Dropout::new(dropout, seed, step, m as u64);
        st.accumulate(batch, &mut drop, &cfg)?;
        if let Some(b) = micro.get(m + 1) {
            st.prepare(b)?;
        }
    }
    st.clip(clip)?;
    if let Some(b) = next {
        st.prepare(b)?;
    }
    for (out, batch) in st.losses()?.iter().zip(micro) {
        log.add_micro(out.loss as f64, &out.parts, batch);
    }
    log.grad_norm = st.grad_norm()?;
    Ok(log.per_token())
}

/// The loss configuration of held-out evaluation: cross-entropy alone.
const EVAL_LOSS: LossConfig = LossConfig {
    z_loss: 0.0,
    label_smoothing: 0.0,
    normalization: LossNormalization::Sum,
};

/// Held-out cross-entropy per target token over `batches`.
pub fn eval_loss<D: Device<f32>>(model: &T5<D>, batches: &[Batch]) -> f64 {
    let mut ce = 0.0;
    let mut tokens = 0usize;
    for b in batches {
        let (_, parts) = model.forward_loss(b, &mut Dropout::off(), NoneTape, &EVAL_LOSS, 1.0);
        ce += parts.cross_entropy;
        tokens += parts.tokens;
    }
    ce / tokens.max(1) as f64
}

/// [`eval_loss`] on a flat step.
pub fn flat_eval_loss(st: &dyn TrainStep, batches: &[Batch]) -> Result<f64> {
    let (mut ce, mut tokens) = (0.0, 0usize);
    for b in batches {
        let parts = st.loss(b, &EVAL_LOSS)?.parts;
        ce += parts.cross_entropy;
        tokens += parts.tokens;
    }
    Ok(ce / tokens.max(1) as f64)
}

/// The real target tokens (loss weight > 0, inside the vocabulary) of batches.
fn real_targets(batches: &[Batch], vocab: usize) -> impl Iterator<Item = usize> + '_ {
    batches.iter().flat_map(move |b| {
        b.targets
            .iter()
            .zip(&b.weights)
            .filter(move |(t, w)| **w > 0.0 && **t < vocab)
            .map(|(t, _)| *t)
    })
}

/// Cross-entropy per token of `eval` targets under the add-one smoothed
/// unigram distribution of `train` targets.
pub fn unigram_baseline(train: &[Batch], eval: &[Batch], vocab: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab];
    let mut total = vocab as f64;
    for t in real_targets(train, vocab) {
        counts[t] += 1.0;
        total += 1.0;
    }
    let (mut ce, mut n) = (0.0, 0usize);
    for t in real_targets(eval, vocab) {
        ce -= (counts[t] / total).ln();
        n += 1;
    }
    ce / n.max(1) as f64
}

/// Entropy (nats per token) of the unigram distribution of `eval`'s targets.
pub fn unigram_oracle(eval: &[Batch], vocab: usize) -> f64 {
    let mut counts = vec![0f64; vocab];
    let mut n = 0f64;
    for t in real_targets(eval, vocab) {
        counts[t] += 1.0;
        n += 1.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| -(c / n) * (c / n).ln())
        .sum()
}

fn read_metrics(path: &Path) -> Vec<StepLog> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Draws the training (and held-out) loss per token against the step.
pub fn plot_losses(logs: &[StepLog], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    if logs.is_empty() {
        return Ok(());
    }
    let train: Vec<(f64, f64)> = logs
        .iter()
        .map(|l| (l.step as f64, l.ce_per_token))
        .collect();
    let eval: Vec<(f64, f64)> = logs
        .iter()
        .filter_map(|l| l.eval_ce_per_token.map(|e| (l.step as f64, e)))
        .collect();
    let max_x = train.last().map_or(1.0, |p| p.0).max(1.0);
    let max_y = train
        .iter()
        .chain(&eval)
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "t5mix train: cross-entropy per target token",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss / token")
            .draw()?;
        chart
            .draw_series(LineSeries::new(train.clone(), &BLUE))?
            .label("train")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        if !eval.is_empty() {
            chart
                .draw_series(LineSeries::new(eval.clone(), &RED))?
                .label("held-out")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        }
        chart.configure_series_labels().border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::Data(format!("{}: plotting: {e}", path.display())))
}

/// A training run. `on_step` sees every step's log line (progress bars).
pub struct Trainer<D: Device<f32>> {
    /// The model.
    pub model: T5<D>,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// What the data check found worth saying (examples the lengths trim).
    pub notes: Vec<String>,
    /// The vocabulary of the data (from its manifests), recorded with every
    /// saved model so that evaluation decodes with the same one.
    pub vocabulary: Option<VocabularyInfo>,
    opts: TrainOptions,
    stream: Prefetch,
    eval_batches: Vec<Batch>,
    step: u64,
    start_step: u64,
    /// The step off the dfdx model (`--device cuda`, `cpu-flat`): it holds
    /// the weights and optimizer state; `model` and `optimizer` are copies
    /// made when they are needed (evaluation hooks, checkpoints, the end).
    flat: Option<Box<dyn TrainStep>>,
}

impl<D: Device<f32>> Trainer<D> {
    /// Sets up a run: a fresh start, or with `resume` the latest checkpoint
    /// under `opts.out` (an error if the options differ from that run's).
    pub fn new(opts: TrainOptions, dev: &D, resume: bool) -> Result<Self> {
        // reject a bad loss normalisation before any work
        opts.loss_config()?;
        opts.sequence_length()
            .check()
            .and_then(|()| {
                (opts.inputs_length > 0 && opts.batch_size > 0)
                    .then_some(())
                    .ok_or_else(|| "inputs length and batch size must be positive".to_string())
            })
            .map_err(TrainError::Config)?;
        opts.check()?;
        // no GPU: say so before any work
        if let TrainDevice::Cuda { ordinal, .. } = opts.device {
            crate::device::gpu_context(ordinal)?;
        }
        if opts.grad_accum == 0 || opts.steps == 0 {
            return Err(TrainError::Config(
                "steps and gradient accumulation must be positive".into(),
            ));
        }
        t5mix_pipeline::atomic::create_out_dir(&opts.out)?;
        let files = shard_files(&opts.train)?;
        let mut stream = BatchStream::new(files, opts.data_config(None))?;
        let eval_batches = if opts.eval.is_empty() {
            Vec::new()
        } else {
            let mut es = BatchStream::new(
                shard_files(&opts.eval)?,
                DataConfig {
                    shuffle_buffer: 0,
                    epochs: Some(1),
                    keep_partial: true,
                    ..opts.data_config(Some(1))
                },
            )?;
            let mut v = Vec::new();
            while v.len() < opts.eval_batches.max(1) {
                match es.next_batch()? {
                    Some(b) => v.push(b),
                    None => break,
                }
            }
            if v.is_empty() {
                return Err(TrainError::Data(format!(
                    "the held-out data {:?} holds no examples",
                    opts.eval
                )));
            }
            v
        };
        let mut resume_notes = Vec::new();
        let mut resumed = None;
        if resume {
            let cps = list_checkpoints(&opts.out);
            if cps.is_empty() {
                resume_notes.push(format!(
                    "--resume: no checkpoint in {} yet, starting at step 0",
                    opts.out.display()
                ));
            }
            // the newest readable checkpoint: a truncated one (a kill while
            // the disk was full) falls back to the one before
            for (step, dir) in cps.iter().rev() {
                match load_checkpoint(dir, &opts, dev)? {
                    Ok((model, opt, state)) => {
                        resumed = Some((*step, model, opt, state));
                        break;
                    }
                    Err(e) => resume_notes.push(format!(
                        "checkpoint {} cannot be read ({e}); using the one before",
                        dir.display()
                    )),
                }
            }
            if resumed.is_none() && !cps.is_empty() {
                return Err(TrainError::Config(format!(
                    "--resume: no readable checkpoint in {}: {}",
                    opts.out.display(),
                    resume_notes.join("; ")
                )));
            }
        }
        let (model, optimizer, step) = match resumed {
            Some((step, model, mut opt, state)) => {
                opt.step = state.optimizer_step;
                stream.skip(state.batches_consumed)?;
                // the log keeps what the checkpoint had seen
                let mpath = opts.out.join("metrics.jsonl");
                let kept: Vec<StepLog> = read_metrics(&mpath)
                    .into_iter()
                    .filter(|l| l.step <= step)
                    .collect();
                let mut text = String::new();
                for l in &kept {
                    text.push_str(&serde_json::to_string(l).expect("log"));
                    text.push('\n');
                }
                write_atomic(&mpath, text.as_bytes())?;
                (model, opt, step)
            }
            None => {
                if !resume && !list_checkpoints(&opts.out).is_empty() {
                    return Err(TrainError::Config(format!(
                        "{} already holds checkpoints: pass --resume to continue that run, \
                         or choose another --out",
                        opts.out.display()
                    )));
                }
                let mut model = match &opts.model {
                    ModelInit::Fresh(cfg) => T5::new(cfg.clone(), dev, Some(opts.seed)),
                    ModelInit::Named(name) => {
                        let mut cfg = T5Config::named(name)?;
                        let data = check_example_folders(
                            &opts.train,
                            usize::MAX,
                            opts.sequence_length(),
                            opts.allow_partial,
                        )?;
                        if let Some(v) = data.vocabulary {
                            cfg.vocab_size = v.padded_vocab_size() as usize;
                        }
                        T5::new(cfg, dev, Some(opts.seed))
                    }
                    ModelInit::From(dir) => load_model(dir, dev)?,
                };
                if let Some(d) = opts.dropout {
                    model.cfg.dropout_rate = d;
                }
                let shapes: Vec<(usize, usize)> = model.params.iter().map(|p| *p.shape()).collect();
                let _ = std::fs::remove_file(opts.out.join("metrics.jsonl"));
                (model, Optimizer::new(opts.optimizer, &shapes), 0)
            }
        };
        let mut all = opts.train.clone();
        all.extend(opts.eval.iter().cloned());
        let FolderCheck { notes, vocabulary } = check_example_folders(
            &all,
            model.cfg.vocab_size,
            opts.sequence_length(),
            opts.allow_partial,
        )?;
        let flat = opts.device.flat_step(&model, &optimizer)?;
        let opts_json = serde_json::to_vec_pretty(&opts).expect("options serialize");
        write_atomic(&opts.out.join("train_options.json"), &opts_json)?;
        let mut notes = notes;
        notes.extend(resume_notes);
        Ok(Trainer {
            notes,
            vocabulary,
            model,
            optimizer,
            opts,
            stream: Prefetch::new(stream, PREFETCH_BATCHES),
            eval_batches,
            step,
            start_step: step,
            flat,
        })
    }

    /// `model` and `optimizer` from the flat step's (copies to the host).
    fn sync_from_flat(&mut self) -> Result<()> {
        if let Some(st) = &self.flat {
            let params = st.params()?;
            self.model.set_params(&st.model().layout.split(&params));
            (self.optimizer.states, self.optimizer.step) = st.optimizer_state()?;
        }
        Ok(())
    }

    /// What the run is: the data notes, steps, parameters, feed-forward,
    /// embeddings and where the step runs.
    pub fn describe(&self) -> String {
        let c = &self.model.cfg;
        let device = if let Some(st) = &self.flat {
            st.describe()
        } else if cfg!(feature = "cuda") {
            "on the GPU".to_string()
        } else {
            format!(
                "CPU, {} threads, matrix products in {}",
                rayon::current_num_threads(),
                if crate::kernels::uses_openblas() {
                    "OpenBLAS"
                } else {
                    "dfdx's gemm (install libopenblas-dev and rebuild for faster steps)"
                }
            )
        };
        format!(
            "{} parameters ({} {}), {device}",
            self.model.num_params(),
            c.feed_forward_proj,
            if c.tie_word_embeddings {
                "tied"
            } else {
                "untied"
            },
        )
    }

    /// The step training starts from.
    pub fn start_step(&self) -> u64 {
        self.start_step
    }

    /// Runs until `opts.steps` (or `stop_after` more steps, to simulate or
    /// schedule an interruption) and writes the final model, the log and the plot.
    pub fn run(
        &mut self,
        stop_after: Option<u64>,
        on_step: &mut dyn FnMut(&StepLog),
        mut eval_hook: Option<&mut EvalHook<'_, D>>,
    ) -> Result<TrainSummary> {
        let opts = self.opts.clone();
        let loss_cfg = opts.loss_config()?;
        let dropout = opts.dropout.unwrap_or(self.model.cfg.dropout_rate);
        let mpath = opts.out.join("metrics.jsonl");
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&mpath)
            .map_err(|e| TrainError::io(&mpath, e))?;
        let mut events = crate::tensorboard::EventWriter::create(&opts.out)?;
        let started = Instant::now();
        let mut tokens = 0u64;
        let mut ran = 0u64;
        let mut logs: Vec<StepLog> = Vec::new();
        let end = match stop_after {
            Some(n) => (self.step + n).min(opts.steps),
            None => opts.steps,
        };
        let mut eval_ce = None;
        // the optimizer's copy of the weights (only the optimizer changes
        // them during the loop), copied into the model after each update
        // (a flat step keeps its own)
        let mut host: Vec<Vec<f32>> = match self.flat {
            Some(_) => Vec::new(),
            None => self.model.params.iter().map(|p| p.as_vec()).collect(),
        };
        while self.step < end {
            let t0 = Instant::now();
            let mut micro = Vec::with_capacity(opts.grad_accum);
            for _ in 0..opts.grad_accum {
                match self.stream.next_batch()? {
                    Some(b) => micro.push(b),
                    None => return Err(TrainError::Data("the training data ended".into())),
                }
            }
            for b in &micro {
                b.check_ids(self.model.cfg.vocab_size)?;
            }
            let lr = opts.schedule.lr(self.step);
            let (grads, mut log) = match self.flat.as_deref_mut() {
                Some(st) => {
                    let keys = (dropout, opts.seed, self.step);
                    // the next step's first batch, read ahead (not yet
                    // counted as consumed)
                    let next = match self.step + 1 < end {
                        true => self.stream.peek(),
                        false => None,
                    };
                    let batches = (micro.as_slice(), next);
                    let log = flat_gradients(st, batches, &loss_cfg, keys, opts.clip_grad_norm)?;
                    (None, log)
                }
                None => {
                    let (mut grads, mut log) = compute_gradients(
                        &self.model,
                        &micro,
                        &loss_cfg,
                        dropout,
                        opts.seed,
                        self.step,
                    );
                    log.grad_norm = clip_global_norm(&mut grads, opts.clip_grad_norm);
                    (Some(grads), log)
                }
            };
            if !(log.loss.is_finite() && log.grad_norm.is_finite()) {
                return Err(TrainError::Data(format!(
                    "step {}: the loss is {} and the gradient norm {}; stopped before the \
                     update (the last checkpoint in {} holds the last good weights): lower \
                     the learning rate or clip gradients (--clip-grad-norm)",
                    self.step + 1,
                    log.loss,
                    log.grad_norm,
                    opts.out.join("checkpoints").display()
                )));
            }
            match (self.flat.as_deref_mut(), grads) {
                (Some(st), _) => st.update(lr)?,
                (None, Some(grads)) => {
                    self.optimizer.update(&mut host, &grads, lr);
                    self.model.set_params(&host);
                }
                (None, None) => unreachable!("the model's step has gradients"),
            }
            self.step += 1;
            ran += 1;
            log.step = self.step;
            log.lr = lr;
            // the step's own time: evaluation and checkpoints (the
            // weights copied off the GPU for them) are the run's
            log.seconds = t0.elapsed().as_secs_f64();
            let last = self.step == end;
            let eval_now = (opts.eval_every > 0 && self.step.is_multiple_of(opts.eval_every))
                || self.step == opts.steps;
            if eval_now && !self.eval_batches.is_empty() {
                let e = match self.flat.as_deref() {
                    Some(st) => flat_eval_loss(st, &self.eval_batches)?,
                    None => eval_loss(&self.model, &self.eval_batches),
                };
                log.eval_ce_per_token = Some(e);
                eval_ce = Some(e);
            }
            let checkpoint_now = (opts.checkpoint_every > 0
                && self.step.is_multiple_of(opts.checkpoint_every))
                || last;
            if (eval_now && eval_hook.is_some()) || checkpoint_now {
                self.sync_from_flat()?;
            }
            if eval_now {
                if let Some(h) = eval_hook.as_mut() {
                    log.task_metrics = Some(h(self.step, &self.model)?);
                }
            }
            tokens += log.tokens;
            writeln!(log_file, "{}", serde_json::to_string(&log).expect("log"))
                .map_err(|e| TrainError::io(&mpath, e))?;
            events.scalars(log.step, &log.scalars())?;
            on_step(&log);
            logs.push(log);
            if checkpoint_now {
                let state = TrainerState {
                    step: self.step,
                    batches_consumed: self.stream.batches,
                    optimizer_step: self.optimizer.step,
                    options: opts.resume_key(),
                    tool: format!("t5mix {}", env!("CARGO_PKG_VERSION")),
                };
                save_checkpoint(
                    &self.model,
                    self.vocabulary.as_ref(),
                    &self.optimizer,
                    &state,
                    &opts.out,
                    opts.keep_checkpoints,
                )?;
            }
        }
        let final_model = opts.out.join("final");
        if self.step == opts.steps {
            save_model(&self.model, &final_model)?;
            if let Some(v) = &self.vocabulary {
                v.write_to_model(&final_model)?;
            }
        }
        let all = read_metrics(&mpath);
        plot_losses(&all, &opts.out.join("loss.svg"))?;
        let k = (logs.len() / 5).clamp(1, 10);
        let mean =
            |s: &[StepLog]| s.iter().map(|l| l.ce_per_token).sum::<f64>() / s.len().max(1) as f64;
        let secs = started.elapsed().as_secs_f64();
        let mut step_secs: Vec<f64> = logs.iter().map(|l| l.seconds).collect();
        let steps_secs: f64 = step_secs.iter().sum();
        step_secs.sort_by(f64::total_cmp);
        let unigram = (!self.eval_batches.is_empty()).then(|| {
            // the training targets seen in this run's first batches
            let mut s = BatchStream::new(
                shard_files(&opts.train).unwrap_or_default(),
                opts.data_config(Some(1)),
            );
            let mut train = Vec::new();
            if let Ok(s) = s.as_mut() {
                while let Ok(Some(b)) = s.next_batch() {
                    train.push(b);
                    if train.len() >= 256 {
                        break;
                    }
                }
            }
            unigram_baseline(&train, &self.eval_batches, self.model.cfg.vocab_size)
        });
        let oracle = (!self.eval_batches.is_empty())
            .then(|| unigram_oracle(&self.eval_batches, self.model.cfg.vocab_size));
        let summary = TrainSummary {
            eval_unigram_oracle_ce_per_token: oracle,
            start_step: self.start_step,
            steps: self.step,
            parameters: self.model.num_params(),
            first_ce_per_token: mean(&logs[..k.min(logs.len())]),
            last_ce_per_token: mean(&logs[logs.len().saturating_sub(k)..]),
            eval_ce_per_token: eval_ce,
            eval_unigram_ce_per_token: unigram,
            tokens_per_second: tokens as f64 / steps_secs.max(1e-9),
            ms_per_step: steps_secs * 1000.0 / ran.max(1) as f64,
            median_ms_per_step: step_secs
                .get(step_secs.len() / 2)
                .map_or(0.0, |s| s * 1000.0),
            seconds: secs,
            final_model,
            total_steps: opts.steps,
            log: mpath,
            // (a statistic: a driver that cannot tell leaves it out)
            gpu_peak_memory: self
                .flat
                .as_deref()
                .and_then(|st| st.peak_memory().ok().flatten()),
        };
        let json = serde_json::to_vec_pretty(&summary).expect("summary");
        write_atomic(&opts.out.join("summary.json"), &json)?;
        Ok(summary)
    }
}
