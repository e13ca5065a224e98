//! End-to-end: bundled crawl → clean shards → span-corruption example shards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{ok, shard_bytes, t5mix};

use t5mix_pipeline::shards::read_example_shard;
use t5mix_pipeline::shared_data::shared_file;

struct Setup {
    _dir: tempfile::TempDir,
    clean: PathBuf,
    model: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let model = shared_file("t5-spm/spiece.model");
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/crawl");
    ok(&[
        "clean",
        sample.to_str().unwrap(),
        "--out",
        clean.to_str().unwrap(),
        "-q",
        "--pages-per-shard",
        "6",
    ]);
    Setup {
        root: dir.path().to_path_buf(),
        _dir: dir,
        clean,
        model,
    }
}

/// Runs `build` of span corruption from the clean shards into `out`, with
/// `--sequence-length inputs=64,targets=14` unless `extra` gives one.
fn run_build(s: &Setup, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--task",
        "c4_span_corruption",
        "--input",
        s.clean.to_str().unwrap(),
        "--vocab",
        s.model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    if !extra.contains(&"--sequence-length") {
        args.extend(["--sequence-length", "inputs=64,targets=14"]);
    }
    args.extend(extra);
    t5mix(&args)
}

/// [`run_build`], which must succeed.
fn build(s: &Setup, out: &Path, extra: &[&str]) -> Output {
    let o = run_build(s, out, extra);
    assert!(
        o.status.success(),
        "build {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// [`run_build`], which must fail with `what` in its message.
fn refused(s: &Setup, out: &Path, extra: &[&str], what: &str) {
    let o = run_build(s, out, extra);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(what),
        "{extra:?}: {err}"
    );
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn build_is_deterministic_resumable_and_splits_over_workers() {
    let s = setup();
    let a = s.root.join("a");
    build(&s, &a, &["--threads", "1"]);
    let first = shard_bytes(&a);
    assert!(
        first.len() >= 4,
        "one output shard per clean shard ({})",
        first.len()
    );

    // Same bytes on 2 threads.
    let b = s.root.join("b");
    build(&s, &b, &["--threads", "2"]);
    assert_eq!(shard_bytes(&b), first);

    // Resume: a shard lost and a half-written temporary file left by a kill.
    let victim = a.join(&first[1].0);
    std::fs::remove_file(&victim).unwrap();
    std::fs::write(a.join(format!(".{}.tmp", first[1].0)), b"partial").unwrap();
    let o = build(&s, &a, &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 shard(s) written"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(shard_bytes(&a), first);

    // Two workers, then --finalize: the same shards and manifest.
    let w = s.root.join("w");
    build(&s, &w, &["--worker-index", "0", "--num-workers", "2"]);
    let o = run_build(&s, &w, &["--finalize"]);
    assert!(!o.status.success(), "finalize refuses with shards missing");
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing"));
    build(&s, &w, &["--worker-index", "1", "--num-workers", "2"]);
    build(&s, &w, &["--finalize"]);
    assert_eq!(shard_bytes(&w), first);
    let ma: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("manifest.json")).unwrap()).unwrap();
    let mw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(ma, mw);
    assert_eq!(ma["sequence_length"]["inputs"], 64);
    assert_eq!(ma["stats"]["inputs_max_tokens"], 64);
    assert_eq!(ma["stats"]["targets_max_tokens"], 14);
}

/// A resumed or split build made with other options than the shards on disk
/// is refused (it would mix shards of two builds): another seed, other
/// lengths, another vocabulary, on resume and at --finalize; the manifest
/// then still describes what is there.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn builds_with_other_options_do_not_mix_shards() {
    let s = setup();
    let a = s.root.join("a");
    build(&s, &a, &[]);
    let before = shard_bytes(&a);
    let manifest = std::fs::read(a.join("manifest.json")).unwrap();
    // a complete cache rerun with another seed or other lengths
    refused(
        &s,
        &a,
        &["--sequence-length", "inputs=64,targets=14", "--seed", "7"],
        "t5mix.seed = 0",
    );
    refused(
        &s,
        &a,
        &["--sequence-length", "inputs=128,targets=28"],
        "t5mix.sequence_length",
    );
    // an interrupted one resumed with other options
    std::fs::remove_file(a.join(&before[0].0)).unwrap();
    refused(
        &s,
        &a,
        &["--sequence-length", "inputs=64,targets=14", "--seed", "3"],
        "t5mix.seed",
    );
    build(&s, &a, &[]);
    assert_eq!(shard_bytes(&a), before);
    assert_eq!(std::fs::read(a.join("manifest.json")).unwrap(), manifest);
    // worker 1 with another vocabulary: its shards are refused at --finalize
    let w = s.root.join("w");
    build(&s, &w, &["--worker-index", "0", "--num-workers", "2"]);
    build(
        &s,
        &w,
        &[
            "--worker-index",
            "1",
            "--num-workers",
            "2",
            "--extra-ids",
            "50",
        ],
    );
    refused(
        &s,
        &w,
        &["--sequence-length", "inputs=64,targets=14", "--finalize"],
        "made with",
    );
    assert!(!w.join("manifest.json").exists());
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn shards_hold_t5_span_corruption_examples() {
    let s = setup();
    let out = s.root.join("o");
    build(&s, &out, &[]);
    let mut n = 0;
    for (name, _) in shard_bytes(&out) {
        let (ex, meta) = read_example_shard(&out.join(&name)).unwrap();
        assert!(meta
            .iter()
            .any(|(k, v)| k == "t5mix.task" && v == "c4_span_corruption"));
        for e in ex {
            n += 1;
            assert_eq!(e.task, "c4_span_corruption");
            assert!(e.inputs.len() <= 64 && e.targets.len() <= 14);
            assert_eq!((e.inputs.last(), e.targets.last()), (Some(&1), Some(&1)));
            assert_eq!(e.targets[0], 32099, "targets start with <extra_id_0>");
            let sentinels_in = e.inputs.iter().filter(|&&t| t >= 32000).count();
            let sentinels_out = e.targets.iter().filter(|&&t| t >= 32000).count();
            assert_eq!(sentinels_in, sentinels_out);
        }
    }
    assert!(n > 50, "{n} examples");
    let o = ok(&[
        "inspect",
        out.to_str().unwrap(),
        "--vocab",
        s.model.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("task c4_span_corruption:") && text.contains("<extra_id_0>"),
        "{text}"
    );
    let o = ok(&["tasks", "show", "c4_span_corruption"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("span_corruption"));
}

/// Shards are plain Parquet: pyarrow reads them.
#[test]
#[cfg_attr(
    not(all(t5mix_py_pyarrow, t5mix_shared_data)),
    ignore = "needs python3 with pyarrow, and ../shared/data"
)]
fn shards_read_with_pyarrow() {
    let s = setup();
    let out = s.root.join("p");
    build(&s, &out, &[]);
    let (name, _) = shard_bytes(&out).remove(0);
    let path = out.join(name);
    let script = format!(
        "import pyarrow.parquet as pq\nt = pq.read_table({:?})\nprint(t.num_rows, t.schema.field('task').type, t.column('inputs')[0].as_py()[-1])",
        path.display().to_string()
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ex, _) = read_example_shard(&path).unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        text.trim(),
        format!(
            "{} dictionary<values=string, indices=int32, ordered=0> 1",
            ex.len()
        )
    );
}

/// What a build reads is checked first: a clean folder without its manifest
/// (an interrupted clean) unless --allow-partial, a split with no pages, a
/// split name that would write outside --out.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn builds_refuse_partial_or_unknown_inputs() {
    let s = setup();
    let o = s.root.join("o");
    refused(&s, &o, &["--split", "../../x"], "split: \"../../x\"");
    refused(&s, &o, &["--split", "bogus"], "no pages of split \"bogus\"");
    assert!(!s.root.join("x").exists());
    std::fs::remove_file(s.clean.join("manifest.json")).unwrap();
    refused(&s, &o, &[], "no manifest.json");
    build(&s, &o, &["--allow-partial"]);
}
