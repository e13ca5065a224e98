//! Fuzzing the pipeline's readers and parsers with generated inputs — random
//! bytes and random edits (flips, cuts, insertions) of valid files — for a
//! bounded number of cases from a fixed seed: every input gives a value or
//! an error, never a panic or a hang.

use std::io::Write;
use std::path::Path;

use t5mix_pipeline::readers::{read_file, rows, InputFormat, ReadOptions};
use t5mix_pipeline::shards::{read_example_shard, write_example_shard, ShardExample};

/// Cases per target (each a file written and read).
const CASES: u32 = 500;

#[path = "../../tests/support/fuzz.rs"]
mod support;
use support::inputs;

/// A runner of [`CASES`] cases from `salt`.
fn runner(salt: u8) -> proptest::test_runner::TestRunner {
    support::runner(salt, CASES)
}

/// Runs `f` on each generated file's path.
fn fuzz(salt: u8, valid: Vec<u8>, name: &str, f: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    runner(salt)
        .run(&inputs(valid, 600), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            f(&path);
            Ok(())
        })
        .unwrap();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn wet() -> Vec<u8> {
    let mut s = String::new();
    for (i, text) in [
        "A first page of text.\nWith two lines.",
        "Second page.\nWARC/1.0\nstill it.",
    ]
    .iter()
    .enumerate()
    {
        s += &format!(
            "WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: http://x/{i}\r\nWARC-Date: 2019-01-01T00:00:00Z\r\nContent-Length: {}\r\n\r\n{text}\r\n\r\n",
            text.len()
        );
    }
    s.into_bytes()
}

fn read_all(path: &Path, format: InputFormat, strict: bool) {
    let opts = ReadOptions {
        format,
        strict,
        ..Default::default()
    };
    let _ = read_file(path, &opts, &mut |_| Ok(()));
}

#[test]
fn document_readers_never_panic() {
    let jsonl =
        b"{\"text\": \"hello world\", \"url\": \"u1\", \"meta\": {\"a\": 1}}\n{\"text\": \"x\"}\n"
            .to_vec();
    for (salt, valid, name, format) in [
        (1, wet(), "x.warc.wet", InputFormat::Wet),
        (2, gz(&wet()), "x.warc.wet.gz", InputFormat::Auto),
        (3, jsonl.clone(), "x.jsonl", InputFormat::Jsonl),
        (4, gz(&jsonl), "x.jsonl.gz", InputFormat::Auto),
        (
            5,
            b"one page\n\nanother one\n".to_vec(),
            "x.txt",
            InputFormat::Text,
        ),
    ] {
        fuzz(salt, valid, name, |p| {
            read_all(p, format, false);
            read_all(p, format, true);
        });
    }
}

#[test]
fn row_readers_never_panic() {
    let tsv = b"sentence1\tsentence2\tlabel\nA man.\tA person.\t0\n".to_vec();
    let csv = b"q,a\n\"who, me?\",yes\n".to_vec();
    let jsonl = b"{\"translation\": {\"en\": \"hi\", \"de\": \"hallo\"}}\n".to_vec();
    fuzz(6, tsv, "x.tsv", |p| {
        let _ = rows::read_delimited(p, true, true, &[]);
    });
    fuzz(7, csv, "x.csv", |p| {
        let _ = rows::read_delimited(p, false, true, &[]);
    });
    fuzz(8, jsonl, "x.jsonl", |p| {
        let _ = rows::read_jsonl_rows(p);
        let _ = rows::read_line_rows(p);
    });
}

#[test]
fn parquet_shards_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("s.parquet");
    let examples: Vec<ShardExample> = (0..20)
        .map(|i| ShardExample {
            task: format!("t{}", i % 2),
            inputs: (0..i).collect(),
            targets: vec![i, 1],
            pretokenized: Some((format!("in {i}"), "out".into())),
        })
        .collect();
    write_example_shard(&shard, &examples, &[("k".into(), "v".into())]).unwrap();
    let valid = std::fs::read(&shard).unwrap();
    fuzz(9, valid.clone(), "x.parquet", |p| {
        let _ = read_example_shard(p);
        let _ = rows::read_parquet_rows(p);
        let _ = t5mix_pipeline::cache::read_clean_texts(p, "train");
    });
    // and the Parquet document reader, on the same files
    fuzz(10, valid, "y.parquet", |p| {
        read_all(p, InputFormat::Parquet, false)
    });
}

#[test]
fn sentencepiece_models_never_panic() {
    // a real model when this build can train one, else bytes alone
    let dir = tempfile::tempdir().unwrap();
    let valid = if t5mix_pipeline::vocab::train::trainer_available() {
        let text = dir.path().join("t.txt");
        let lines: String = (0..400)
            .map(|i| {
                format!(
                    "line {i} of some text about gardens, rivers and the {} sea.\n",
                    i % 7
                )
            })
            .collect();
        std::fs::write(&text, lines).unwrap();
        let opts = t5mix_pipeline::vocab::train::TrainOptions {
            vocab_size: 60,
            ..Default::default()
        };
        let m =
            t5mix_pipeline::vocab::train::train_from_text_file(&text, &dir.path().join("m"), &opts)
                .unwrap();
        std::fs::read(m).unwrap()
    } else {
        Vec::new()
    };
    runner(11)
        .run(&inputs(valid, 600), |bytes| {
            if let Ok(v) = t5mix_pipeline::vocab::Vocabulary::from_bytes(&bytes, 100) {
                let ids = v.encode("Some text, with ünïcödé and 123 digits.");
                let _ = v.decode(&ids);
                let _ = v.decode(&[0, 1, 2, 5000, u32::MAX]);
            }
            Ok(())
        })
        .unwrap();
}
