//! `examples/custom_task.rs` end to end, through the same CLI code users
//! get: its Rust task (own token preprocessor and metric) is built, mixed
//! with T5's span corruption, a micro T5 trains on the mixture for a few
//! steps with the task scored during training, and `eval` reports its metric.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example's binary, built by `cargo test` beside the `t5mix` binary.
fn example() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_t5mix"));
    let exe = bin
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("custom_task{}", std::env::consts::EXE_SUFFIX));
    assert!(exe.exists(), "{} not built", exe.display());
    exe
}

fn run(args: &[&str]) -> String {
    let o = Command::new(example()).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[cfg_attr(
    not(t5mix_spm_trainer),
    ignore = "trains vocabularies: needs libsentencepiece-dev and pkg-config"
)]
fn example_task_builds_mixes_trains_and_scores_with_its_own_metric() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s).display().to_string();
    let crawl = format!("{}/data/crawl", env!("CARGO_MANIFEST_DIR"));
    let listed = run(&["tasks", "list"]);
    assert!(
        listed.contains("add_numbers") && listed.contains("add_and_c4"),
        "{listed}"
    );

    // a vocabulary of the bundled crawl sample, and the task's rows
    run(&["clean", &crawl, "--out", &p("clean"), "-q"]);
    run(&[
        "vocab",
        "train",
        "--input",
        &p("clean"),
        "--vocab-size",
        "400",
        "--out",
        &p("spm"),
    ]);
    let spm = p("spm.model");
    let data = tmp.path().join("add");
    std::fs::create_dir_all(&data).unwrap();
    for (split, n, salt) in [("train", 160, 0), ("validation", 12, 1000)] {
        let rows: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"a\": {}, \"b\": {}}}\n",
                    (i * 7 + salt) % 50,
                    (i * 13 + salt) % 50
                )
            })
            .collect();
        std::fs::write(data.join(format!("{split}.jsonl")), rows).unwrap();
    }
    let data = data.display().to_string();

    run(&[
        "build",
        "--task",
        "add_numbers",
        "--input",
        &data,
        "--vocab",
        &spm,
        "--out",
        &p("add_cache"),
        "-q",
    ]);
    run(&[
        "build",
        "--task",
        "c4_span_corruption",
        "--input",
        &p("clean"),
        "--vocab",
        &spm,
        "--sequence-length",
        "inputs=32,targets=8",
        "--out",
        &p("c4_cache"),
        "-q",
    ]);
    run(&[
        "build",
        "--mixture",
        "add_and_c4",
        "--caches",
        &p("add_cache"),
        &p("c4_cache"),
        "--out",
        &p("mix"),
        "-q",
    ]);
    let mix: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("mix/manifest.json")).unwrap())
            .unwrap();
    assert!(
        mix["tasks"]["add_numbers"]["examples"].as_u64().unwrap() > 0,
        "{mix}"
    );
    assert!(
        mix["tasks"]["c4_span_corruption"]["examples"]
            .as_u64()
            .unwrap()
            > 0,
        "{mix}"
    );

    let trained = run(&[
        "train",
        "--data",
        &p("mix"),
        "--out",
        &p("run"),
        "--model",
        "micro",
        "--steps",
        "12",
        "--batch-size",
        "8",
        "--sequence-length",
        "inputs=32,targets=8",
        "--optimizer",
        "adamw",
        "--schedule",
        "constant:0.003",
        "--eval-every",
        "6",
        "--eval-task",
        "add_numbers",
        "--task-input",
        &data,
        "--vocab",
        &spm,
        "-q",
    ]);
    assert!(trained.contains("final model"), "{trained}");
    let log = std::fs::read_to_string(tmp.path().join("run/metrics.jsonl")).unwrap();
    let scored: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("task_metrics").is_some())
        .collect();
    assert_eq!(scored.len(), 2, "{log}");
    assert!(scored[1]["task_metrics"]["add_numbers"]["within_one"].is_number());

    run(&[
        "eval",
        "--checkpoint",
        &p("run/final"),
        "--task",
        "add_numbers",
        "--task-input",
        &data,
        "--vocab",
        &spm,
        "--out",
        &p("scores.json"),
        "--predictions",
        &p("preds.jsonl"),
    ]);
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("scores.json")).unwrap()).unwrap();
    let t = &scores["tasks"]["add_numbers"];
    assert_eq!(t["examples"], 12);
    let within = t["within_one"].as_f64().unwrap();
    assert!(
        (0.0..=100.0).contains(&within) && t["exact_match"].is_number(),
        "{scores}"
    );
    // the metric is the example's own: recomputed from the predictions file
    let preds = std::fs::read_to_string(tmp.path().join("preds.jsonl")).unwrap();
    let close = preds
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| {
            let t: f64 = r["target"].as_str().unwrap().parse().unwrap();
            r["prediction"]
                .as_str()
                .unwrap()
                .trim()
                .parse::<f64>()
                .is_ok_and(|p| (p - t).abs() <= 1.0)
        })
        .count();
    assert_eq!(preds.lines().count(), 12);
    assert_eq!(within, 100.0 * close as f64 / 12.0);

    // the model records its data's vocabulary: another tokenizer is refused
    assert!(tmp.path().join("run/final/t5mix_vocabulary.json").exists());
    run(&[
        "vocab",
        "train",
        "--input",
        &p("clean"),
        "--vocab-size",
        "300",
        "--out",
        &p("other"),
    ]);
    let o = Command::new(example())
        .args([
            "eval",
            "--checkpoint",
            &p("run/final"),
            "--task",
            "add_numbers",
        ])
        .args(["--task-input", &data, "--vocab", &p("other.model")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("md5"), "{err}");
}
