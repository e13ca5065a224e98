//! A task registered in Rust with a closure preprocessor, built end to end
//! into example shards with the library API.

use std::collections::BTreeMap;

use t5mix_pipeline::cache::{build_cache, CacheSpec, ExampleSource, Worker};
use t5mix_pipeline::shards::read_example_shard;
use t5mix_pipeline::shared_data::shared_or_skip;
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::supervised::{FileFormat, Row};
use t5mix_tasks::{Source, Task, TaskRegistry};

#[test]
fn a_rust_registered_task_builds_end_to_end() {
    let Some(spm) = shared_or_skip("t5-spm/spiece.model", "rust task") else {
        return;
    };
    let vocab = Vocabulary::load(&spm, 100).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.jsonl"),
        "{\"q\": \"who wrote hamlet?\", \"a\": \"Shakespeare\"}\n{\"q\": \"capital of france?\", \"a\": \"Paris\"}\n",
    )
    .unwrap();
    // the few lines a user writes
    let source = Source::Files {
        format: FileFormat::Jsonl,
        splits: BTreeMap::from([("train".to_string(), vec!["train.jsonl".to_string()])]),
        split_formats: BTreeMap::new(),
    };
    let task = Task::custom("shout_qa", source, "uppercase trivia", |row: &Row| {
        let q = row.get("q").ok_or("no column q")?;
        Ok((format!("trivia: {}", q.to_uppercase()), row["a"].clone()))
    });
    let mut reg = TaskRegistry::builtin();
    reg.add(task).unwrap();

    let task = reg.get("shout_qa").unwrap().clone();
    let inputs = task
        .source
        .split_files("shout_qa", "train", &[dir.path().display().to_string()])
        .unwrap();
    let t = task.clone();
    let read = move |p: &std::path::Path| t.text_pairs(p, "train");
    let spec = CacheSpec {
        task: "shout_qa",
        split: "train",
        seed: 0,
        examples: ExampleSource::TextPairs(&read),
        vocab: &vocab,
        inputs_length: 64,
        targets_length: 8,
        pretokenized: true,
    };
    let out = dir.path().join("out");
    build_cache(&spec, &inputs, &out, Worker::default(), |_, _| {}).unwrap();
    let shard = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let (examples, meta) = read_example_shard(&shard).unwrap();
    assert_eq!(examples.len(), 2);
    let e = &examples[0];
    assert_eq!(e.task, "shout_qa");
    assert_eq!(
        e.pretokenized.as_ref().unwrap(),
        &(
            "trivia: WHO WROTE HAMLET?".to_string(),
            "Shakespeare".to_string()
        )
    );
    let mut want = vocab.encode("trivia: WHO WROTE HAMLET?");
    want.push(1);
    assert_eq!(e.inputs, want);
    assert!(meta
        .iter()
        .any(|(k, v)| k == "t5mix.task" && v == "shout_qa"));

    // a preprocessor error names the file and row
    std::fs::write(dir.path().join("train.jsonl"), "{\"x\": 1}\n").unwrap();
    let err = task
        .text_pairs(&dir.path().join("train.jsonl"), "train")
        .unwrap_err();
    assert!(err.contains("train.jsonl: row 1: no column q"), "{err}");
}
