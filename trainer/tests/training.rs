//! Training end to end on synthetic shards: a tiny model memorises 32
//! examples, and a resumed run equals an uninterrupted one bit for bit.

use std::path::{Path, PathBuf};

use t5mix_pipeline::features::{Packing, SequenceLength};
use t5mix_pipeline::manifest::{Manifest, TaskManifest, VocabularyInfo};
use t5mix_pipeline::shards::{write_example_shard, ExampleStats, ShardExample};
use t5mix_trainer::optim::{OptimizerConfig, Schedule};
use t5mix_trainer::train::{list_checkpoints, ModelInit, TrainDevice, TrainOptions, Trainer};
use t5mix_trainer::weights::read_safetensors;
use t5mix_trainer::{Dev, T5Config};
mod common;

fn micro_config() -> T5Config {
    let mut cfg = T5Config::named("micro").unwrap();
    cfg.vocab_size = 128;
    cfg.d_model = 32;
    cfg.d_kv = 8;
    cfg.d_ff = 64;
    cfg.num_heads = 4;
    cfg
}

/// 32 examples: inputs of 3–8 ids, targets their reversal, EOS = 1 at the end.
fn write_shards(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x = 12345u64;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as u32
    };
    let mut examples = Vec::new();
    for _ in 0..32 {
        let n = 3 + next() % 6;
        let mut inputs: Vec<u32> = (0..n).map(|_| 2 + next() % 120).collect();
        let mut targets: Vec<u32> = inputs.iter().rev().cloned().collect();
        inputs.push(1);
        targets.push(1);
        examples.push(ShardExample {
            task: "reverse".into(),
            inputs,
            targets,
            pretokenized: None,
        });
    }
    write_example_shard(
        &dir.join("train-00000-of-00002.parquet"),
        &examples[..16],
        &[],
    )
    .unwrap();
    write_example_shard(
        &dir.join("train-00001-of-00002.parquet"),
        &examples[16..],
        &[],
    )
    .unwrap();
    write_manifest(dir, &examples, 128);
}

/// A task-cache manifest for `examples` with a vocabulary of `vocab_size` ids.
fn write_manifest(dir: &Path, examples: &[ShardExample], vocab_size: u32) {
    let mut stats = ExampleStats::default();
    for e in examples {
        stats.add(e.inputs.len(), e.targets.len());
    }
    Manifest::Task(TaskManifest {
        task: "reverse".into(),
        split: "train".into(),
        seed: 0,
        objective: "reversal".into(),
        sequence_length: SequenceLength {
            inputs: 16,
            targets: 16,
        },
        vocabulary: VocabularyInfo {
            md5: "synthetic".into(),
            vocab_size,
            extra_ids: 0,
        },
        shards: vec![
            "train-00000-of-00002.parquet".into(),
            "train-00001-of-00002.parquet".into(),
        ],
        tasks: Default::default(),
        stats,
        tool_version: "test".into(),
    })
    .write(dir)
    .unwrap();
}

fn options(data: &Path, out: &Path, steps: u64) -> TrainOptions {
    let mut o = TrainOptions::new(
        ModelInit::Fresh(micro_config()),
        vec![data.to_path_buf()],
        out.to_path_buf(),
        steps,
    );
    o.inputs_length = 16;
    o.targets_length = 16;
    o.batch_size = 16;
    o.packing = Packing::None;
    o.shuffle_buffer = 32;
    o.loss_normalization = t5mix_trainer::model::LossNormalization::NumRealTargetTokens;
    o
}

#[test]
fn a_tiny_model_memorises_32_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let mut o = options(&data, &tmp.path().join("run"), 300);
    o.optimizer = OptimizerConfig::adamw();
    o.schedule = Schedule::Constant { lr: 1e-2 };
    o.z_loss = 0.0;
    o.eval = vec![data.clone()];
    o.eval_batches = 2;
    let mut t = Trainer::new(o, &Dev::default(), false).unwrap();
    let s = t.run(None, &mut |_| {}, None).unwrap();
    eprintln!("{s:?}");
    // TensorBoard's event file: every step's scalars, readable (CRCs checked)
    let events = event_file(&tmp.path().join("run"));
    let scalars = t5mix_trainer::tensorboard::read_scalars(&events).unwrap();
    let losses: Vec<&(u64, String, f32)> = scalars
        .iter()
        .filter(|(_, t, _)| t == "train/loss_per_token")
        .collect();
    assert_eq!(losses.len(), 300);
    assert_eq!((losses[0].0, losses[299].0), (1, 300));
    assert!(scalars
        .iter()
        .any(|(step, t, _)| *step == 300 && t == "eval/loss_per_token"));
    assert!(
        s.first_ce_per_token > 3.0,
        "starts near ln(128): {}",
        s.first_ce_per_token
    );
    let e = s.eval_ce_per_token.unwrap();
    assert!(
        e < 0.05,
        "memorised: held-out (= training) loss per token {e}"
    );
    assert!(e < s.eval_unigram_ce_per_token.unwrap() / 20.0);
    // the final model is an HF folder, the log and the plot exist
    assert!(s.final_model.join("model.safetensors").is_file());
    assert!(s.final_model.join("config.json").is_file());
    let run = tmp.path().join("run");
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        300
    );
    assert!(std::fs::read_to_string(run.join("loss.svg"))
        .unwrap()
        .contains("<svg"));
    // the speed is the steps' own (their logged seconds, without the
    // evaluation, the checkpoint and the final model), the wall time apart
    let mut secs: Vec<f64> = metrics(&run)
        .iter()
        .map(|m| m["seconds"].as_f64().unwrap())
        .collect();
    let steps: f64 = secs.iter().sum();
    assert!((s.ms_per_step - steps * 1000.0 / 300.0).abs() < 1e-6 * s.ms_per_step);
    secs.sort_by(f64::total_cmp);
    assert_eq!(s.median_ms_per_step, secs[150] * 1000.0);
    assert!(s.seconds > steps, "wall {} s, steps {steps} s", s.seconds);
}

fn weights(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let mut v: Vec<(String, Vec<u32>)> = read_safetensors(&dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, (_, x))| (k, x.iter().map(|f| f.to_bits()).collect()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    resumed_equals_uninterrupted(TrainDevice::Cpu, OptimizerConfig::adafactor());
}

#[test]
fn a_resumed_run_of_the_flat_step_equals_an_uninterrupted_one() {
    for optimizer in [OptimizerConfig::adafactor(), OptimizerConfig::adamw()] {
        resumed_equals_uninterrupted(TrainDevice::CpuFlat, optimizer);
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn a_resumed_gpu_run_equals_an_uninterrupted_one() {
    common::gpu();
    use t5mix_trainer::device::products::Precision;
    for (precision, optimizer) in [
        (Precision::Bf16, OptimizerConfig::adafactor()),
        (Precision::Tf32, OptimizerConfig::adamw()),
    ] {
        let device = TrainDevice::Cuda {
            ordinal: 0,
            precision,
        };
        resumed_equals_uninterrupted(device, optimizer);
    }
}

/// A run on `device` stopped after step 3, its last checkpoint truncated,
/// resumed from step 2: the final weights and the log are those of a run
/// never stopped, bit for bit (dropout on, two micro-batches a step).
fn resumed_equals_uninterrupted(device: TrainDevice, optimizer: OptimizerConfig) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let setup = |out: PathBuf| {
        let mut o = options(&data, &out, 6);
        o.device = device;
        o.optimizer = optimizer;
        o.batch_size = 8;
        o.grad_accum = 2;
        o.dropout = Some(0.1);
        o.checkpoint_every = 2;
        o.keep_checkpoints = 2;
        o.packing = Packing::Greedy;
        o.inputs_length = 24;
        o.targets_length = 24;
        o
    };
    let full = tmp.path().join("full");
    let mut t = Trainer::new(setup(full.clone()), &Dev::default(), false).unwrap();
    t.run(None, &mut |_| {}, None).unwrap();

    let part = tmp.path().join("part");
    let mut t = Trainer::new(setup(part.clone()), &Dev::default(), false).unwrap();
    t.run(Some(3), &mut |_| {}, None).unwrap(); // "killed" after step 3; step 2 and 3 saved
    drop(t);
    assert!(!part.join("final").exists());
    // a fresh start over an existing run is refused
    assert!(Trainer::new(setup(part.clone()), &Dev::default(), false).is_err());
    // the step-3 checkpoint truncated (a kill while writing, a full disk):
    // resume falls back to step 2, says so, and redoes step 3
    let cps = list_checkpoints(&part);
    assert_eq!(cps.iter().map(|c| c.0).collect::<Vec<_>>(), vec![2, 3]);
    let weights_file = cps[1].1.join("model.safetensors");
    let bytes = std::fs::read(&weights_file).unwrap();
    std::fs::write(&weights_file, &bytes[..bytes.len() / 2]).unwrap();
    // `out` spelled another way is the same run
    let mut again = setup(part.clone());
    again.out = part.join("..").join("part");
    let mut t = Trainer::new(again, &Dev::default(), true).unwrap();
    assert_eq!(t.start_step(), 2);
    assert!(
        t.notes.iter().any(|n| n.contains("cannot be read")),
        "{:?}",
        t.notes
    );
    t.run(None, &mut |_| {}, None).unwrap();
    assert_eq!(weights(&full.join("final")), weights(&part.join("final")));
    let log = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let strip = |s: String| -> Vec<String> {
        s.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("seconds");
                v.to_string()
            })
            .collect()
    };
    assert_eq!(strip(log(&full)), strip(log(&part)));
    // keep_checkpoints = 2
    assert_eq!(
        list_checkpoints(&full)
            .iter()
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        vec![4, 6]
    );
    // other options on resume are refused
    let mut other = setup(part.clone());
    other.seed = 9;
    assert!(Trainer::new(other, &Dev::default(), true).is_err());
}

/// The metrics log of a run, one JSON object a step.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The flat step (the GPU's code, here on the CPU) trains as the dfdx
/// model does: the same losses, gradient norms and held-out loss step by
/// step (dropout, two micro-batches, clipping, token normalisation), and a
/// checkpoint of one resumes on the other.
#[test]
fn the_flat_step_trains_as_the_model_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let setup = |out: PathBuf, device| {
        let mut o = options(&data, &out, 5);
        o.device = device;
        o.batch_size = 8;
        o.grad_accum = 2;
        o.dropout = Some(0.1);
        o.clip_grad_norm = Some(0.5);
        o.optimizer = OptimizerConfig::adamw();
        o.schedule = Schedule::Constant { lr: 3e-3 };
        o.eval = vec![data.clone()];
        o.eval_every = 2;
        o.checkpoint_every = 2;
        o
    };
    let (model, flat) = (tmp.path().join("model"), tmp.path().join("flat"));
    for (out, device) in [(&model, TrainDevice::Cpu), (&flat, TrainDevice::CpuFlat)] {
        let mut t = Trainer::new(setup(out.clone(), device), &Dev::default(), false).unwrap();
        if device == TrainDevice::CpuFlat {
            assert!(t.describe().contains("the GPU's step code on the CPU"));
        }
        t.run(None, &mut |_| {}, None).unwrap();
    }
    let close = |a: &serde_json::Value, b: &serde_json::Value, key: &str, step: usize| {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-3 * x.abs().max(1e-3),
            "step {step} {key}: model {x}, flat step {y}"
        );
    };
    let (a, b) = (metrics(&model), metrics(&flat));
    assert_eq!((a.len(), b.len()), (5, 5));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        for key in ["loss", "ce_per_token", "z_loss_per_token", "grad_norm"] {
            close(x, y, key, i + 1);
        }
        assert_eq!(x["target_tokens"], y["target_tokens"]);
        if x.get("eval_ce_per_token").is_some() {
            close(x, y, "eval_ce_per_token", i + 1);
        }
    }
    assert!(a[4]["ce_per_token"].as_f64() < a[0]["ce_per_token"].as_f64());
    // the final weights agree closely (the sums' order differs)
    let (wa, wb) = (weights(&model.join("final")), weights(&flat.join("final")));
    assert_eq!(wa.len(), wb.len());
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        let float = |v: &[u32]| -> Vec<f32> { v.iter().map(|&b| f32::from_bits(b)).collect() };
        let worst = t5mix_trainer::max_abs_diff(&float(x), &float(y));
        assert!(worst < 1e-3, "{name}: {worst}");
    }
    // a checkpoint of the model's run resumes on the flat step (and on)
    let moved = tmp.path().join("moved");
    let mut t = Trainer::new(
        setup(moved.clone(), TrainDevice::Cpu),
        &Dev::default(),
        false,
    )
    .unwrap();
    t.run(Some(2), &mut |_| {}, None).unwrap();
    drop(t);
    let mut t = Trainer::new(
        setup(moved.clone(), TrainDevice::CpuFlat),
        &Dev::default(),
        true,
    )
    .unwrap();
    assert_eq!(t.start_step(), 2);
    t.run(None, &mut |_| {}, None).unwrap();
    let c = metrics(&moved);
    assert_eq!(c.len(), 5);
    for (i, (x, y)) in a.iter().zip(&c).enumerate() {
        close(x, y, "ce_per_token", i + 1);
    }
}

#[test]
fn evaluation_streams_keep_the_last_partial_batch() {
    use t5mix_trainer::data::{shard_files, BatchStream, DataConfig};
    let tmp = tempfile::tempdir().unwrap();
    write_shards(tmp.path());
    let sizes = |keep_partial: bool| -> Vec<usize> {
        let cfg = DataConfig {
            inputs_length: 16,
            targets_length: 16,
            batch_size: 20,
            packing: Packing::None,
            shuffle_buffer: 0,
            seed: 0,
            epochs: Some(1),
            keep_partial,
        };
        let mut s =
            BatchStream::new(shard_files(&[tmp.path().to_path_buf()]).unwrap(), cfg).unwrap();
        let mut v = Vec::new();
        while let Some(b) = s.next_batch().unwrap() {
            v.push(b.batch);
        }
        v
    };
    assert_eq!(sizes(false), vec![20]);
    assert_eq!(sizes(true), vec![20, 12]);
}

/// Batches read ahead on a background thread are the stream's own, in its
/// order, through epochs, shuffling, packing and the end of the data; one
/// wrapped after a resume's skip goes on from there; a peek is the next
/// batch, not counted as handed out.
#[test]
fn prefetched_batches_are_the_streams() {
    use t5mix_trainer::data::{shard_files, BatchStream, DataConfig, Prefetch};
    let tmp = tempfile::tempdir().unwrap();
    write_shards(tmp.path());
    let cfg = DataConfig {
        inputs_length: 16,
        targets_length: 16,
        batch_size: 3,
        packing: Packing::Greedy,
        shuffle_buffer: 8,
        seed: 5,
        epochs: Some(3),
        keep_partial: true,
    };
    let stream = || {
        BatchStream::new(
            shard_files(&[tmp.path().to_path_buf()]).unwrap(),
            cfg.clone(),
        )
        .unwrap()
    };
    let mut direct = Vec::new();
    let mut s = stream();
    while let Some(b) = s.next_batch().unwrap() {
        direct.push(b);
    }
    assert!(direct.len() > 10);
    for depth in [1, 2, 64] {
        let mut p = Prefetch::new(stream(), depth);
        let mut got = Vec::new();
        while let Some(b) = p.next_batch().unwrap() {
            got.push(b);
        }
        assert_eq!(got, direct, "depth {depth}");
        assert_eq!(p.batches, direct.len() as u64);
        assert!(p.next_batch().unwrap().is_none(), "stays ended");
    }
    let mut skipped = stream();
    skipped.skip(4).unwrap();
    let mut p = Prefetch::new(skipped, 2);
    assert_eq!(p.next_batch().unwrap().as_ref(), Some(&direct[4]));
    assert_eq!(p.batches, 5);
    // a peek shows the next batch without handing it out
    assert_eq!(p.peek(), Some(&direct[5]));
    assert_eq!(p.peek(), Some(&direct[5]));
    assert_eq!(p.batches, 5);
    assert_eq!(p.next_batch().unwrap().as_ref(), Some(&direct[5]));
    assert_eq!(p.batches, 6);
    // dropped before the end: the reader thread stops
    drop(p);
    // peeking to the end
    let mut p = Prefetch::new(stream(), 2);
    let mut got = Vec::new();
    loop {
        let peeked = p.peek().cloned();
        let b = p.next_batch().unwrap();
        assert_eq!(peeked, b);
        match b {
            Some(b) => got.push(b),
            None => break,
        }
    }
    assert_eq!(got, direct);
    assert_eq!(p.peek(), None);
}

/// Shards are checked against the model before step 1: a folder without a
/// manifest or with a vocabulary larger than the embedding is refused,
/// examples longer than the lengths are noted (they are trimmed); ids past
/// the embedding stop training with an error.
#[test]
fn shards_are_checked_against_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let err = |o: TrainOptions| match Trainer::new(o, &Dev::default(), false) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    let o = options(&data, &tmp.path().join("a"), 2).tap(|o| o.inputs_length = 4);
    let t = Trainer::new(o, &Dev::default(), false).unwrap();
    assert!(
        t.notes[0].ends_with("inputs of up to 9 tokens are trimmed to 4"),
        "{:?}",
        t.notes
    );
    let e = err(options(&data, &tmp.path().join("b"), 2).tap(|o| o.targets_length = 0));
    assert!(e.contains("targets must be in 1..="), "{e}");
    std::fs::remove_file(data.join("manifest.json")).unwrap();
    let e = err(options(&data, &tmp.path().join("c"), 2));
    assert!(
        e.contains("no manifest.json") && e.contains("--allow-partial"),
        "{e}"
    );
    // a cache built with a larger vocabulary than the model's embedding
    let (examples, _) =
        t5mix_pipeline::shards::read_example_shard(&data.join("train-00000-of-00002.parquet"))
            .unwrap();
    write_manifest(&data, &examples, 32100);
    let e = err(options(&data, &tmp.path().join("d"), 2));
    assert!(e.contains("32100 ids") && e.contains("128"), "{e}");
    // foreign shards with an id past the embedding: a clear error, no panic
    let mut bad = examples.clone();
    bad[0].inputs[0] = 500;
    write_example_shard(&data.join("train-00000-of-00002.parquet"), &bad, &[]).unwrap();
    std::fs::remove_file(data.join("manifest.json")).unwrap();
    let mut o = options(&data, &tmp.path().join("e"), 2);
    o.allow_partial = true;
    o.shuffle_buffer = 0;
    let mut t = Trainer::new(o, &Dev::default(), false).unwrap();
    let e = t.run(None, &mut |_| {}, None).unwrap_err().to_string();
    assert!(
        e.contains("token id 500") && e.contains("128 embedding rows"),
        "{e}"
    );
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for TrainOptions {}

/// Options that would train to NaN weights are refused before any work,
/// and a loss that becomes non-finite stops the run with an error before
/// the update, with no final model written.
#[test]
fn non_finite_training_is_refused_and_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let refused = |f: &dyn Fn(&mut TrainOptions), what: &str| {
        let mut o = options(&data, &tmp.path().join("x"), 2);
        f(&mut o);
        match Trainer::new(o, &Dev::default(), false) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => assert!(e.to_string().contains(what), "{e}"),
        }
    };
    refused(&|o| o.z_loss = f32::NAN, "z-loss");
    refused(&|o| o.label_smoothing = 2.0, "label smoothing");
    refused(&|o| o.dropout = Some(1.5), "dropout");
    refused(&|o| o.dropout = Some(-0.5), "dropout");
    refused(&|o| o.clip_grad_norm = Some(0.0), "clipping");
    refused(
        &|o| o.schedule = Schedule::Constant { lr: f64::INFINITY },
        "learning rates",
    );
    refused(
        &|o| o.schedule = Schedule::Constant { lr: -1.0 },
        "learning rates",
    );
    for s in [
        "constant:NaN",
        "constant:inf",
        "constant:-0.1",
        "cosine:1e400",
    ] {
        assert!(Schedule::parse(s, 10).is_err(), "{s}");
    }
    // a rate that blows the weights up: stopped at the first non-finite loss
    let out = tmp.path().join("blowup");
    let mut o = options(&data, &out, 20);
    o.optimizer = OptimizerConfig::adamw();
    o.schedule = Schedule::Constant { lr: 1e30 };
    let mut t = Trainer::new(o, &Dev::default(), false).unwrap();
    let e = t.run(None, &mut |_| {}, None).unwrap_err().to_string();
    assert!(e.contains("stopped before the update"), "{e}");
    assert!(!out.join("final").exists());
}

/// `--resume` with no checkpoint yet starts at step 0 and says so (job
/// scripts resume unconditionally).
#[test]
fn resume_without_a_checkpoint_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let t = Trainer::new(
        options(&data, &tmp.path().join("r"), 2),
        &Dev::default(),
        true,
    )
    .unwrap();
    assert_eq!(t.start_step(), 0);
    assert!(
        t.notes.iter().any(|n| n.contains("no checkpoint")),
        "{:?}",
        t.notes
    );
}

/// A tokenizer with more ids than the model's embedding is refused before
/// decoding (it used to index past the embedding).
#[test]
fn larger_tokenizers_are_refused() {
    let m = t5mix_trainer::T5::new(micro_config(), &Dev::default(), Some(0));
    assert!(m.check_vocabulary(128).is_ok());
    let e = m.check_vocabulary(32100).unwrap_err().to_string();
    assert!(e.contains("32100") && e.contains("128"), "{e}");
}

/// The run's TensorBoard event file.
fn event_file(run: &Path) -> PathBuf {
    std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .expect("an event file")
}

/// TensorBoard's own reader (Python `tensorboard`, `pip install
/// tensorboard`) loads a run's scalars.
#[test]
#[cfg_attr(
    not(t5mix_py_tensorboard),
    ignore = "needs python3 with the tensorboard package"
)]
fn tensorboard_reads_the_event_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_shards(&data);
    let run = tmp.path().join("run");
    let mut t = Trainer::new(options(&data, &run, 5), &Dev::default(), false).unwrap();
    t.run(None, &mut |_| {}, None).unwrap();
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1]); acc.Reload()
s = acc.Scalars("train/loss_per_token")
print(len(s), [e.step for e in s], "train/learning_rate" in acc.Tags()["scalars"])
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", script, run.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(out.trim(), "5 [1, 2, 3, 4, 5] True");
}
