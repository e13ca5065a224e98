//! Helpers shared by the end-to-end tests of the `t5mix` binary.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use t5mix_pipeline::shards::read_example_shard;

/// The bundled 512-piece SentencePiece model (data/vocab/crawl.model): for
/// tests that need a vocabulary but not T5's ids.
pub fn bundled_vocab() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/vocab/crawl.model")
}

/// Runs the binary.
pub fn t5mix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_t5mix"))
        .args(args)
        .output()
        .expect("run t5mix")
}

/// Runs the binary with `env` added to its environment.
pub fn t5mix_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_t5mix"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run t5mix")
}

/// Runs the binary and asserts that it succeeded.
pub fn ok(args: &[&str]) -> Output {
    let o = t5mix(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The bundled crawl sample (data/crawl) cleaned into `dir`/clean, then
/// T5's span corruption of it with the SentencePiece model `vocab` and
/// `lengths` (`inputs=N,targets=M`) into `dir`/c4, whose path it returns.
pub fn sample_span_corruption(dir: &Path, vocab: &Path, lengths: &str) -> String {
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/crawl");
    ok(&[
        "clean",
        sample.to_str().unwrap(),
        "--out",
        &p("clean"),
        "-q",
    ]);
    ok(&[
        "build",
        "--task",
        "c4_span_corruption",
        "--input",
        &p("clean"),
        "--vocab",
        vocab.to_str().unwrap(),
        "--sequence-length",
        lengths,
        "--out",
        &p("c4"),
        "-q",
    ]);
    p("c4")
}

/// The Parquet files of a directory, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    v.sort();
    v
}

/// Name and bytes of every Parquet file of a directory, sorted.
pub fn shard_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    parquet_files(dir)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// `(inputs, targets)` of every example shard of a directory, in order.
pub fn example_pairs(dir: &Path) -> Vec<(Vec<u32>, Vec<u32>)> {
    parquet_files(dir)
        .iter()
        .flat_map(|f| read_example_shard(f).unwrap().0)
        .map(|e| (e.inputs, e.targets))
        .collect()
}
