//! End to end: the bundled crawl sample → clean shards → span-corruption
//! shards (train and held-out by page) → `t5mix train` → the held-out loss
//! beats the unigram baseline; fine-tuning on GLUE RTE → `t5mix eval`, whose
//! accuracy is checked against a count over its own predictions file; and an
//! interrupted `t5mix train` resumed with `--resume`.

mod common;

use common::ok;
use t5mix_pipeline::shared_data::shared_file;

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn pretrain_finetune_eval_and_resume() {
    let spm = shared_file("t5-spm/spiece.model");
    let rte = shared_file("glue-hf-dummy/rte");
    // the real RTE validation set (277 pairs) for the evaluation
    let rte_dev = shared_file("rte-glue-hf");
    let spm = spm.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).to_str().unwrap().to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    ok(&[
        "clean",
        &format!("{root}/data/crawl"),
        "--out",
        &p("clean"),
        "--pages-per-shard",
        "16",
        "-q",
    ]);
    for (clean, out) in [
        ("part-00000.parquet", "c4"),
        ("part-00001.parquet", "c4_heldout"),
    ] {
        ok(&[
            "build",
            "--task",
            "c4_span_corruption",
            "--input",
            &p(&format!("clean/{clean}")),
            "--vocab",
            spm,
            "--sequence-length",
            "inputs=64,targets=16",
            "--out",
            &p(out),
            "-q",
        ]);
    }
    // pretraining: a micro model, 60 steps
    ok(&[
        "train",
        "--data",
        &p("c4"),
        "--eval-data",
        &p("c4_heldout"),
        "--out",
        &p("pre"),
        "--model",
        "micro",
        "--steps",
        "60",
        "--batch-size",
        "8",
        "--sequence-length",
        "inputs=64,targets=16",
        "--optimizer",
        "adamw",
        "--schedule",
        "constant:0.003",
        "--loss-normalization",
        "tokens",
        "--checkpoint-every",
        "30",
        "--eval-every",
        "30",
        "-q",
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("pre/summary.json")).unwrap()).unwrap();
    let held = summary["eval_ce_per_token"].as_f64().unwrap();
    let unigram = summary["eval_unigram_ce_per_token"].as_f64().unwrap();
    assert!(held < unigram - 1.0, "held-out {held} vs unigram {unigram}");
    assert!(std::path::Path::new(&p("pre/final/model.safetensors")).is_file());
    assert!(std::fs::read_to_string(p("pre/loss.svg"))
        .unwrap()
        .contains("<svg"));

    // fine-tuning on RTE from the pretrained weights, then eval
    ok(&[
        "build",
        "--task",
        "glue_rte",
        "--input",
        rte.to_str().unwrap(),
        "--vocab",
        spm,
        "--sequence-length",
        "inputs=128,targets=4",
        "--out",
        &p("rte"),
        "-q",
    ]);
    ok(&[
        "train",
        "--data",
        &p("rte"),
        "--out",
        &p("ft"),
        "--init-from",
        &p("pre/final"),
        "--steps",
        "10",
        "--batch-size",
        "8",
        "--sequence-length",
        "inputs=128,targets=4",
        "--packing",
        "none",
        "--schedule",
        "constant:0.001",
        "-q",
    ]);
    ok(&[
        "eval",
        "--checkpoint",
        &p("ft/final"),
        "--task",
        "glue_rte",
        "--task-input",
        rte_dev.to_str().unwrap(),
        "--vocab",
        spm,
        "--max-output-length",
        "4",
        "--out",
        &p("scores.json"),
        "--predictions",
        &p("preds.jsonl"),
    ]);
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("scores.json")).unwrap()).unwrap();
    let acc = scores["tasks"]["glue_rte"]["accuracy"].as_f64().unwrap();
    let n = scores["tasks"]["glue_rte"]["examples"].as_u64().unwrap();
    // by hand: a prediction is right when it is the target label text
    let preds = std::fs::read_to_string(p("preds.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, n);
    assert_eq!(n, 277);
    let right = rows
        .iter()
        .filter(|r| r["prediction"] == r["target"] && r["target"] != "")
        .count();
    assert_eq!(
        acc,
        100.0 * right as f64 / n as f64,
        "accuracy vs the predictions file"
    );

    // an interrupted run, resumed, ends where an uninterrupted one does
    let args = |out: &str| -> Vec<String> {
        [
            "train",
            "--data",
            &p("c4"),
            "--out",
            &p(out),
            "--model",
            "micro",
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--sequence-length",
            "inputs=64,targets=16",
            "--checkpoint-every",
            "1",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |v: Vec<String>| {
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        ok(&r);
    };
    run(args("a"));
    let mut b = args("b");
    b.extend(["--stop-after".to_string(), "2".to_string()]);
    run(b);
    assert!(!std::path::Path::new(&p("b/final")).exists());
    let mut b = args("b");
    b.push("--resume".into());
    run(b);
    assert_eq!(
        std::fs::read(p("a/final/model.safetensors")).unwrap(),
        std::fs::read(p("b/final/model.safetensors")).unwrap()
    );
    // the same through the GPU's step code (`--device cpu-flat`): it trains
    // the same model to close weights, and resumes bit for bit
    let flat = |out: &str| {
        let mut v = args(out);
        v.extend(["--device".to_string(), "cpu-flat".to_string()]);
        v
    };
    run(flat("c"));
    let mut d = flat("d");
    d.extend(["--stop-after".to_string(), "2".to_string()]);
    run(d);
    let mut d = flat("d");
    d.push("--resume".into());
    run(d);
    let weights = |run: &str| {
        t5mix_trainer::weights::read_safetensors(std::path::Path::new(&p(&format!(
            "{run}/final/model.safetensors"
        ))))
        .unwrap()
    };
    assert_eq!(
        std::fs::read(p("c/final/model.safetensors")).unwrap(),
        std::fs::read(p("d/final/model.safetensors")).unwrap(),
        "the resumed flat run"
    );
    let (a, c) = (weights("a"), weights("c"));
    for (name, (_, x)) in &a {
        let y = &c[name].1;
        let worst = t5mix_trainer::max_abs_diff(x, y);
        assert!(worst < 1e-3, "{name}: cpu vs cpu-flat {worst}");
    }
}

/// The CPU stand-in of CUDA's libraries (build.rs).
#[cfg(t5mix_cuda_standin)]
const CUDA_STANDIN_DIR: &str = env!("T5MIX_CUDA_STANDIN_DIR");
#[cfg(not(t5mix_cuda_standin))]
const CUDA_STANDIN_DIR: &str = "(the CPU stand-in of CUDA did not build)";

/// `t5mix train --device cuda ARGS` on the CPU stand-in of CUDA
/// (trainer/cuda/standin/: its driver, NVRTC and cuBLAS first on the
/// library path), with `env` added.
fn on_cuda_standin(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = CUDA_STANDIN_DIR;
    let nvrtc = format!("{dir}/libnvrtc.so");
    let mut all = vec![("LD_LIBRARY_PATH", dir), ("T5MIX_NVRTC", nvrtc.as_str())];
    all.extend(env);
    let mut a = vec!["train", "--device", "cuda"];
    a.extend(args);
    common::t5mix_env(&a, &all)
}

/// The GPU tests' sequence lengths.
const LENGTHS: &str = "inputs=32,targets=8";

/// A micro model's run on `data`, `steps` steps of batch `batch` (AdamW,
/// [`LENGTHS`], a checkpoint each step), into `out`.
fn micro_run(data: &str, out: &str, steps: &str, batch: &str) -> Vec<String> {
    [
        "--data",
        data,
        "--out",
        out,
        "--model",
        "micro",
        "--steps",
        steps,
        "--batch-size",
        batch,
        "--sequence-length",
        LENGTHS,
        "--optimizer",
        "adamw",
        "--schedule",
        "constant:0.003",
        "--checkpoint-every",
        "1",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The binary's GPU training, CLI to weights, on the CPU stand-in of CUDA
/// (no shared data, no GPU): with IEEE f32 products it trains the micro
/// model as `--device cpu-flat` does (two micro-batches a step, held-out
/// loss on the GPU), reporting the most GPU memory its buffers held; in
/// bf16 a run interrupted after two steps and resumed ends where an
/// uninterrupted one does, bit for bit.
#[test]
#[cfg_attr(
    not(t5mix_cuda_standin),
    ignore = "the CPU stand-in of CUDA did not build (needs x86-64 and a C++ compiler)"
)]
fn gpu_training_through_the_binary_on_the_cuda_standin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sample_span_corruption(tmp.path(), &common::bundled_vocab(), LENGTHS);
    let p = |s: &str| tmp.path().join(s).to_str().unwrap().to_string();
    let gpu = |out: &str, steps: &str, extra: &[&str]| {
        let mut a = micro_run(&data, &p(out), steps, "4");
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = on_cuda_standin(&a, &[]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{a:?}: {err}");
        err
    };
    let weights = |run: &str| {
        let f = p(&format!("{run}/final/model.safetensors"));
        t5mix_trainer::weights::read_safetensors(std::path::Path::new(&f)).unwrap()
    };
    // (two micro-batches a step, and held-out loss: the training data's)
    let both = [
        "--grad-accum",
        "2",
        "--eval-data",
        &data,
        "--eval-every",
        "3",
    ];
    let mut f32 = vec!["--precision", "f32"];
    f32.extend(both);
    let log = gpu("f32", "3", &f32);
    assert!(
        log.contains("CPU stand-in") && log.contains("products in f32"),
        "{log}"
    );
    let flat = micro_run(&data, &p("flat"), "3", "4");
    let mut flat: Vec<&str> = flat.iter().map(String::as_str).collect();
    flat.splice(0..0, ["train", "--device", "cpu-flat"]);
    flat.extend(both);
    ok(&flat);
    // the most memory the run's buffers held: at least the parameters,
    // their gradients and AdamW's two moments, in f32
    let summary = |run: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p(&format!("{run}/summary.json"))).unwrap())
            .unwrap()
    };
    let params = summary("f32")["parameters"].as_u64().unwrap();
    let peak = summary("f32")["gpu_peak_memory"].as_u64().unwrap();
    assert!(peak > 16 * params, "{peak} bytes for {params} parameters");
    assert!(summary("flat")["gpu_peak_memory"].is_null());
    let held = |run: &str| summary(run)["eval_ce_per_token"].as_f64().unwrap();
    assert!(
        (held("f32") - held("flat")).abs() < 1e-5,
        "held-out {} vs {}",
        held("f32"),
        held("flat")
    );
    let (cuda, cpu) = (weights("f32"), weights("flat"));
    for (name, (_, x)) in &cpu {
        let worst = t5mix_trainer::max_abs_diff(x, &cuda[name].1);
        assert!(worst < 1e-5, "{name}: cpu-flat vs the GPU's f32 {worst}");
    }
    gpu("bf16", "3", &["--precision", "bf16"]);
    gpu(
        "resumed",
        "3",
        &["--precision", "bf16", "--stop-after", "2"],
    );
    assert!(!std::path::Path::new(&p("resumed/final")).exists());
    gpu("resumed", "3", &["--precision", "bf16", "--resume"]);
    assert_eq!(
        std::fs::read(p("bf16/final/model.safetensors")).unwrap(),
        std::fs::read(p("resumed/final/model.safetensors")).unwrap(),
        "the resumed bf16 run"
    );
}

/// A GPU out of memory is a clear error (what was asked, what is free,
/// what needs less), not a panic: the stand-in made an 8 MB GPU, which
/// the micro model fits with batch 2 (its peak memory within it) and not
/// with batch 128.
#[test]
#[cfg_attr(
    not(t5mix_cuda_standin),
    ignore = "the CPU stand-in of CUDA did not build (needs x86-64 and a C++ compiler)"
)]
fn gpu_out_of_memory_says_what_needs_less() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sample_span_corruption(tmp.path(), &common::bundled_vocab(), LENGTHS);
    let p = |s: &str| tmp.path().join(s).to_str().unwrap().to_string();
    let run = |out: &str, batch: &str, memory: &str| {
        let a = micro_run(&data, &p(out), "1", batch);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = on_cuda_standin(&a, &[("T5MIX_STANDIN_MEMORY", memory)]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let refused = |(code, err): (Option<i32>, String), want: &str| {
        assert!(
            code == Some(1)
                && err.contains("the GPU is out of memory")
                && err.contains(want)
                && !err.contains("panicked"),
            "{code:?}: {err}"
        );
    };
    refused(
        run("model", "2", "1000000"),
        "the model itself does not fit",
    );
    refused(run("batch", "128", "8000000"), "a smaller --batch-size");
    let (code, err) = run("fits", "2", "8000000");
    assert_eq!(code, Some(0), "{err}");
    // the GPU named with its memory (8 MB: 7.63 MiB)
    assert!(
        err.contains("t5mix tests), 7.63 MiB), products in"),
        "{err}"
    );
    // its peak, as the GPU's memory pool counts it, within the 8 MB
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("fits/summary.json")).unwrap()).unwrap();
    let peak = summary["gpu_peak_memory"].as_u64().unwrap();
    assert!(peak <= 8_000_000, "{peak}");
}
