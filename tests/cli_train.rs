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
