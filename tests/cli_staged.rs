//! `t5mix clean` as map/reduce stages (`--num-tasks N --buckets R`): the
//! shards are byte-identical to the one-process run for any N and R, with
//! local workers, with every task run by its own command in a shuffled
//! order, and with tasks that fail after writing their outputs and are run
//! again; a run with another plan in the same folder is refused.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, shard_bytes, t5mix};
use t5mix_pipeline::readers::{read_file, Document, ReadOptions};

/// Nine JSONL files made from the bundled crawl sample, with pages repeated
/// across files: newer copies (the URL dedup must pick them, wherever they
/// are) and same-time copies (ties: the first in input order), so that
/// URL and line duplicates cross task and bucket boundaries.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<Document> = Vec::new();
    for f in ["sample.jsonl", "sample.warc.wet.gz"] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("data/crawl")
            .join(f);
        read_file(&p, &ReadOptions::default(), &mut |d| {
            docs.push(d);
            Ok(())
        })
        .unwrap();
    }
    let mut files = vec![String::new(); 9];
    let line = |d: &Document, ts: &str, text: &str| {
        serde_json::json!({"url": d.url, "timestamp": ts, "text": text}).to_string() + "\n"
    };
    for (j, d) in docs.iter().enumerate() {
        files[j % 9] += &line(d, &d.timestamp, &d.text);
        if j % 3 == 0 {
            // a newer copy, later in the input, with one more line
            files[(j + 5) % 9] += &line(
                d,
                "2030-01-01T00:00:00Z",
                &format!("{}\nUpdated later.", d.text),
            );
        }
        if j % 4 == 1 {
            // an equal-time copy in another file
            files[(j + 2) % 9] += &line(d, &d.timestamp, &d.text);
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let p = dir.join(format!("in-{i}.jsonl"));
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

fn clean_args<'a>(inputs: &'a [String], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["clean"];
    a.extend(inputs.iter().map(String::as_str));
    a.extend([
        "--out",
        out,
        "-q",
        "--pages-per-shard",
        "5",
        "--set",
        "min_num_sentences=2",
    ]);
    a.extend(extra);
    a
}

fn manifest_counts(out: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let s = &m["stats"];
    serde_json::json!([
        s["pages_in"],
        s["pages_out"],
        s["bytes_out"],
        s["pages_per_split"],
        s["pages_dropped"],
        s["lines_dropped"],
        s["lines_passed"],
        s["shards"].as_array().map(|a| a.len()),
        m["shards"]
    ])
}

/// The inputs (in a temporary folder) and the one-process run's output.
fn one_process_run() -> (tempfile::TempDir, Vec<String>, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<String> = inputs(&tmp.path().join("in"))
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let one = tmp.path().join("one");
    ok(&clean_args(&files, one.to_str().unwrap(), &[]));
    (tmp, files, one)
}

#[test]
fn staged_runs_write_the_one_process_shards() {
    let (tmp, files, one) = one_process_run();
    let want = shard_bytes(&one);
    assert!(want.len() >= 3, "several shards: {}", want.len());
    let counts = manifest_counts(&one);
    assert!(
        counts[4]["duplicate_url"].as_u64().unwrap() > 0
            && counts[5]["global_duplicate"].as_u64().unwrap() > 0,
        "the inputs exercise both dedups: {counts}"
    );

    // all stages on this machine, 2 workers; with no memory budget the
    // sorts of extract and lines spill runs of a few hundred records
    for (n, r, mb) in [
        ("1", "1", "0"),
        ("3", "4", "0"),
        ("7", "1", "1024"),
        ("7", "4", "0"),
    ] {
        let out = tmp.path().join(format!("staged-{n}-{r}-{mb}"));
        let o = out.to_str().unwrap();
        ok(&clean_args(
            &files,
            o,
            &[
                "--num-tasks",
                n,
                "--buckets",
                r,
                "--local-workers",
                "2",
                "--memory-budget-mb",
                mb,
            ],
        ));
        assert_eq!(shard_bytes(&out), want, "N={n} R={r} budget={mb}");
        assert_eq!(manifest_counts(&out), counts, "N={n} R={r} budget={mb}");
        assert!(!out.join(".t5mix-staged").exists(), "work folder removed");
    }

    // one command per task, in a shuffled order, with failed tasks run again
    let out = tmp.path().join("by-task");
    let o = out.to_str().unwrap();
    let plan = ok(&clean_args(
        &files,
        o,
        &["--num-tasks", "3", "--buckets", "4", "--plan-only"],
    ));
    let summary = String::from_utf8_lossy(&plan.stdout);
    for stage in [
        "extract", "urls", "lines", "owners", "finalize", "write", "--finish",
    ] {
        assert!(summary.contains(stage), "{summary}");
    }
    let slurm = std::fs::read_to_string(out.join(".t5mix-staged/launch/slurm.sh")).unwrap();
    assert_eq!(slurm.matches("--dependency=afterok").count(), 7, "{slurm}");
    assert!(
        slurm.contains("--array=0-3 ") && slurm.contains("\\$SLURM_ARRAY_TASK_ID"),
        "{slurm}"
    );
    let k8s = std::fs::read_to_string(out.join(".t5mix-staged/launch/k8s.yaml")).unwrap();
    assert_eq!(k8s.matches("completionMode: Indexed").count(), 6, "{k8s}");
    // a stage cannot start before the one before it is complete
    let early = t5mix(&["clean", "--out", o, "--task", "urls:0", "-q"]);
    assert!(
        !early.status.success()
            && String::from_utf8_lossy(&early.stderr).contains("stage extract is not complete"),
        "{}",
        String::from_utf8_lossy(&early.stderr)
    );
    for (stage, tasks, order) in [
        ("extract", 3, [2, 0, 1, 0]),
        ("urls", 4, [3, 1, 0, 2]),
        ("lines", 3, [1, 2, 0, 0]),
        ("owners", 4, [0, 3, 2, 1]),
        ("finalize", 3, [2, 1, 0, 0]),
        ("write", 3, [1, 0, 2, 0]),
    ] {
        for &t in &order[..tasks] {
            let task = format!("{stage}:{t}");
            if t == 1 {
                // killed after writing its outputs, before its marker
                let o2 = std::process::Command::new(env!("CARGO_BIN_EXE_t5mix"))
                    .args(["clean", "--out", o, "--task", &task, "-q"])
                    .env("T5MIX_FAIL_TASK", format!("{task}:end"))
                    .output()
                    .unwrap();
                assert!(!o2.status.success(), "{task} should have been stopped");
            }
            ok(&["clean", "--out", o, "--task", &task, "-q"]);
        }
    }
    // a finished task is not run again
    let again = ok(&["clean", "--out", o, "--task", "write:0", "-q"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already done"));
    ok(&["clean", "--out", o, "--finish", "-q"]);
    assert_eq!(shard_bytes(&out), want, "task by task");
    assert_eq!(manifest_counts(&out), counts);

    // another plan in a folder with a staged run under way is refused
    let out = tmp.path().join("other-plan");
    let o = out.to_str().unwrap();
    ok(&clean_args(&files, o, &["--num-tasks", "3", "--plan-only"]));
    // (a memory budget does not change the output: the same run)
    ok(&clean_args(
        &files,
        o,
        &["--num-tasks", "3", "--plan-only", "--memory-budget-mb", "0"],
    ));
    let e = t5mix(&clean_args(&files, o, &["--num-tasks", "7"]));
    assert!(
        !e.status.success()
            && String::from_utf8_lossy(&e.stderr).contains("other inputs or options"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    // a bad task name or index is an error naming it
    for bad in ["merge:0", "urls:9", "extract"] {
        let e = t5mix(&["clean", "--out", o, "--task", bad, "-q"]);
        assert!(!e.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&e.stderr).contains(bad.split(':').next().unwrap()));
    }
}

/// The generated Slurm script on a real (single-node) cluster: job arrays
/// chained by `afterok`, each element a `--task`, then `--finish`; the
/// shards equal the one-process run's.
#[test]
#[cfg_attr(
    not(t5mix_slurm),
    ignore = "needs a Slurm cluster (sudo bash scripts/slurm-single-node.sh)"
)]
fn slurm_job_arrays_write_the_one_process_shards() {
    let (tmp, files, one) = one_process_run();
    let out = tmp.path().join("slurm");
    ok(&clean_args(
        &files,
        out.to_str().unwrap(),
        &["--num-tasks", "3", "--buckets", "2", "--plan-only"],
    ));
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let jobs = submit(&out.join(".t5mix-staged/launch/slurm.sh"), &logs);
    assert_eq!(jobs.len(), 7, "six arrays and the finish job: {jobs:?}");
    wait_for(&jobs);
    let log_text = || {
        std::fs::read_dir(&logs)
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        out.join("manifest.json").exists(),
        "the finish job did not run; job logs:\n{}",
        log_text()
    );
    assert_eq!(shard_bytes(&out), shard_bytes(&one));
    assert_eq!(manifest_counts(&out), manifest_counts(&one));

    // `t5mix build --launchers`: the same examples as one process
    let vocab = common::bundled_vocab();
    let build = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            "build",
            "--task",
            "c4_span_corruption",
            "--input",
            one.to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ];
        a.extend(extra);
        ok(&a)
    };
    build(&tmp.path().join("build-one"), &[]);
    let launch = tmp.path().join("build-launch");
    build(
        &tmp.path().join("build-slurm"),
        &[
            "--num-workers",
            "2",
            "--launchers",
            launch.to_str().unwrap(),
        ],
    );
    let jobs = submit(&launch.join("slurm.sh"), &logs);
    assert_eq!(jobs.len(), 2, "the array and --finalize: {jobs:?}");
    wait_for(&jobs);
    assert!(
        tmp.path().join("build-slurm/manifest.json").exists(),
        "job logs:\n{}",
        log_text()
    );
    assert_eq!(
        shard_bytes(&tmp.path().join("build-slurm")),
        shard_bytes(&tmp.path().join("build-one"))
    );
}

/// Submits a generated slurm.sh; returns the job ids it printed.
fn submit(script: &Path, logs: &Path) -> Vec<String> {
    let submit = std::process::Command::new("bash")
        .arg(script)
        .env("T5MIX", env!("CARGO_BIN_EXE_t5mix"))
        .env(
            "SBATCH_ARGS",
            format!("--output={}/%x-%A_%a.out", logs.display()),
        )
        .output()
        .unwrap();
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    String::from_utf8_lossy(&submit.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Waits until the jobs have left the queue (at most 300 s).
fn wait_for(jobs: &[String]) {
    let t = std::time::Instant::now();
    loop {
        let q = std::process::Command::new("squeue")
            .args(["-h", "-j", &jobs.join(",")])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            return;
        }
        assert!(
            t.elapsed().as_secs() < 300,
            "jobs still queued after 300 s: {}",
            String::from_utf8_lossy(&q.stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
