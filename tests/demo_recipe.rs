//! The demo's self-contained recipe, with nothing beside the repository:
//! the bundled task (data/demo_tasks.toml over data/demo_reviews) built with
//! the bundled vocabulary (data/vocab/crawl.model), a micro T5 sized to that
//! vocabulary, trained on it and evaluated: well above the majority baseline
//! that `t5mix eval` reports next to it.

mod common;

use common::ok;

#[test]
fn bundled_task_is_learned_above_the_majority_baseline() {
    let root = env!("CARGO_MANIFEST_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).to_str().unwrap().to_string();
    let vocab = common::bundled_vocab().display().to_string();
    let tasks = format!("{root}/data/demo_tasks.toml");
    let input = format!("{root}/data/demo_reviews");
    ok(&[
        "build",
        "--task",
        "demo_reviews",
        "--tasks-file",
        &tasks,
        "--input",
        &input,
        "--vocab",
        &vocab,
        "--out",
        &p("reviews"),
        "-q",
    ]);
    ok(&[
        "train",
        "--data",
        &p("reviews"),
        "--out",
        &p("run"),
        "--model",
        "micro",
        "--steps",
        "150",
        "--batch-size",
        "16",
        "--sequence-length",
        "inputs=96,targets=8",
        "--packing",
        "none",
        "--optimizer",
        "adamw",
        "--schedule",
        "constant:0.003",
        "--loss-normalization",
        "tokens",
        "--checkpoint-every",
        "150",
        "-q",
    ]);
    // `--model micro` takes its embedding rows from the data: 512 pieces +
    // 100 sentinels, rounded up to 128.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("run/final/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vocab_size"], 640);
    let out = ok(&[
        "eval",
        "--checkpoint",
        &p("run/final"),
        "--task",
        "demo_reviews",
        "--tasks-file",
        &tasks,
        "--task-input",
        &input,
        "--vocab",
        &vocab,
        "--max-output-length",
        "8",
        "--out",
        &p("scores.json"),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("majority baseline"), "{table}");
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("scores.json")).unwrap()).unwrap();
    let task = &scores["tasks"]["demo_reviews"];
    assert_eq!(task["examples"], 200);
    // the validation split is balanced: the baseline is 50%
    let baseline = &task["majority_baseline"];
    assert_eq!(baseline["accuracy"].as_f64(), Some(50.0), "{baseline}");
    assert_eq!(baseline["prediction"], "negative", "{baseline}");
    let accuracy = task["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 80.0, "accuracy {accuracy} after 150 steps");
}
