//! The bad arguments found by probing the binary (issue: no panic, no
//! abort, no hang, no silent wrong result): each is refused before any work
//! with a message naming the option or value, and a non-zero exit.

mod common;
use common::t5mix;

/// Runs `args`; asserts a clean refusal (exit 1 or clap's 2, no panic)
/// whose message contains `want`.
fn refused(args: &[&str], want: &str) {
    let o = t5mix(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        matches!(o.status.code(), Some(1) | Some(2))
            && err.contains(want)
            && !err.contains("panicked"),
        "{args:?}: {:?}\n{err}",
        o.status.code()
    );
}

#[test]
fn bad_arguments_are_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    let out = format!("{d}/out");
    let train = |extra: &[&str], want: &str| {
        let mut a = vec!["train", "--data", &d, "--out", &out, "--model", "micro"];
        a.extend(extra);
        refused(&a, want);
    };
    let mixture = |extra: &[&str], want: &str| {
        let mut a = vec!["build", "--mixture", "m", "--caches", &d, "--out", &out];
        a.extend(extra);
        refused(&a, want);
    };
    // sizes that allocated up front, overflowed or hung
    mixture(&["--examples", "18446744073709551615"], "--examples");
    mixture(&["--examples", "1000000000000"], "--examples");
    refused(
        &[
            "build",
            "--task",
            "glue_rte",
            "--input",
            &d,
            "--vocab",
            "x",
            "--extra-ids",
            "4000000000",
            "--out",
            &out,
        ],
        "--extra-ids",
    );
    mixture(&["--shard-examples", "0"], "--shard-examples");
    train(&["--shuffle-buffer", "1000000000"], "--shuffle-buffer");
    train(&["--batch-size", "0"], "--batch-size");
    train(
        &["--sequence-length", "inputs=0,targets=0"],
        "targets must be in 1..=",
    );
    train(
        &["--sequence-length", "inputs=0,targets=8"],
        "inputs length and batch size must be positive",
    );
    train(
        &["--sequence-length", "inputs=1000000000000,targets=8"],
        "--sequence-length",
    );
    refused(
        &["clean", &d, "--out", &out, "--threads", "100000"],
        "--threads",
    );
    // values that trained to NaN weights with exit 0
    train(&["--schedule", "constant:NaN"], "schedule");
    train(&["--schedule", "constant:inf"], "schedule");
    train(&["--schedule", "constant:-0.01"], "schedule");
    train(&["--label-smoothing", "2"], "label smoothing");
    train(&["--label-smoothing", "NaN"], "label smoothing");
    train(&["--z-loss", "NaN"], "z-loss");
    train(&["--dropout", "1.5"], "dropout");
    train(&["--dropout", "NaN"], "dropout");
    train(&["--dropout=-0.5"], "dropout");
    train(&["--clip-grad-norm", "0"], "clipping");
    train(&["--clip-grad-norm", "NaN"], "clipping");
    train(&["--loss-normalization", "NaN"], "loss normalization");
    // where the step runs
    train(&["--device", "gpu"], "--device \"gpu\"");
    train(&["--device", "cuda:x"], "--device \"cuda:x\"");
    train(&["--device", "cuda:99999"], "--device \"cuda:99999\"");
    train(
        &["--device", "cuda", "--precision", "fp8"],
        "precision \"fp8\"",
    );
    train(
        &["--precision", "bf16"],
        "--precision bf16: the CPU computes in f32",
    );
    // a mixture of no epochs or of NaN ones
    for e in ["0", "NaN", "inf", "-1"] {
        refused(
            &[
                "build",
                "--mixture",
                "m",
                "--caches",
                &d,
                "--epochs",
                e,
                "--out",
                &out,
            ],
            "",
        );
    }
    // --out is a file
    let file = format!("{d}/a_file");
    std::fs::write(&file, "x").unwrap();
    train(&["--out", &file], "");
    let o = t5mix(&["train", "--data", &d, "--out", &file, "--model", "micro"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is a file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A killed build's folder (no manifest) is described with a warning by
/// inspect, and refused by train unless --allow-partial.
#[test]
fn partial_folders_are_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let shard = tmp.path().join("x-00000-of-00002.parquet");
    let ex = t5mix_pipeline::shards::ShardExample {
        task: "t".into(),
        inputs: vec![5, 6, 1],
        targets: vec![7, 1],
        pretokenized: None,
    };
    t5mix_pipeline::shards::write_example_shard(&shard, &[ex], &[]).unwrap();
    let o = t5mix(&["inspect", tmp.path().to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("no manifest.json"));
    let out = tmp.path().join("run").display().to_string();
    refused(
        &[
            "train",
            "--data",
            tmp.path().to_str().unwrap(),
            "--out",
            &out,
            "--model",
            "micro",
        ],
        "--allow-partial",
    );
}

/// `--device cuda` on a machine without a GPU driver: a clear error before
/// any work (no panic from the driver's loader).
#[test]
#[cfg_attr(t5mix_gpu, ignore = "this machine has a GPU")]
fn gpu_training_without_a_gpu_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display().to_string();
    refused(
        &[
            "train",
            "--data",
            &d,
            "--out",
            &format!("{d}/out"),
            "--device",
            "cuda:1",
        ],
        "no CUDA driver",
    );
}
