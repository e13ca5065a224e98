//! Supervised tasks built from real GLUE files equal seqio's examples, and
//! tasks declared in TOML files.

mod common;
use common::{example_pairs, ok, shard_bytes, t5mix};

use t5mix_pipeline::shared_data::shared_file;

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn glue_tasks_built_from_files_equal_seqio() {
    let (model, glue, reference) = (
        shared_file("t5-spm/spiece.model"),
        shared_file("glue-hf-dummy"),
        shared_file("t5-reference/glue_format.jsonl"),
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(reference)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    let all = ["train", "validation", "test"];
    for (ours, theirs, sub, splits) in [
        ("glue_rte", "glue_rte_v002", "rte", &all[..]),
        ("glue_qnli", "glue_qnli_v002", "qnli", &all[..]),
        ("glue_stsb_t5", "glue_stsb_v002", "stsb", &all[..]),
        ("glue_cola", "glue_cola_v002", "cola", &all[..]),
        ("glue_mrpc", "glue_mrpc_v002", "mrpc", &all[..]),
        ("glue_ax", "glue_ax_v002", "ax", &all[2..]),
    ] {
        for &split in splits {
            let out = dir.path().join(format!("{ours}-{split}"));
            let o = t5mix(&[
                "build",
                "--task",
                ours,
                "--input",
                glue.join(sub).to_str().unwrap(),
                "--vocab",
                model.to_str().unwrap(),
                "--split",
                split,
                "--sequence-length",
                "inputs=512,targets=128",
                "--out",
                out.to_str().unwrap(),
                "--pretokenized",
                "-q",
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let got = example_pairs(&out);
            // the text columns hold the formatted text
            let text: Vec<(String, String)> = common::parquet_files(&out)
                .iter()
                .flat_map(|f| t5mix_pipeline::shards::read_example_shard(f).unwrap().0)
                .map(|e| e.pretokenized.expect("pretokenized text"))
                .collect();
            let want_text: Vec<(String, String)> = rows
                .iter()
                .filter(|r| r["task"] == theirs && r["split"] == split)
                .map(|r| {
                    let t = |k: &str| r[k].as_str().unwrap().to_string();
                    (t("inputs"), t("targets"))
                })
                .collect();
            assert_eq!(text, want_text, "{ours} {split} text");
            let ids = |v: &serde_json::Value| -> Vec<u32> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect()
            };
            let want: Vec<(Vec<u32>, Vec<u32>)> = rows
                .iter()
                .filter(|r| r["task"] == theirs && r["split"] == split)
                .map(|r| (ids(&r["inputs_ids"]), ids(&r["targets_ids"])))
                .collect();
            assert!(!want.is_empty());
            assert_eq!(got, want, "{ours} {split}");
            compared += want.len();
        }
    }
    assert_eq!(compared, 18 + 6 + 33 + 3);
}

#[test]
fn toml_task_files_add_tasks_and_report_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("train.jsonl"),
        "{\"q\": \"Who wrote it?\", \"a\": \"Nobody.\"}\n{\"q\": \"When?\", \"a\": \"Now.\"}\n",
    )
    .unwrap();
    let tasks = dir.path().join("my_tasks.toml");
    std::fs::write(
        &tasks,
        r#"
[[task]]
name = "my_qa"
description = "questions and answers"
preprocessors = [
  { text = { kind = "template", inputs = "question: {q}", targets = "{a}" } },
  "tokenize",
  "append_eos_after_trim",
]
output_features = { inputs = { length = 64 }, targets = { length = 16 } }
metrics = ["exact_match", "bleu"]
[task.source]
kind = "files"
format = { kind = "jsonl" }
splits = { train = ["train.jsonl"] }
"#,
    )
    .unwrap();
    let o = t5mix(&["tasks", "--tasks-file", tasks.to_str().unwrap(), "list"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("my_qa"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let model = common::bundled_vocab();
    {
        let out = dir.path().join("out");
        let o = t5mix(&[
            "build",
            "--task",
            "my_qa",
            "--tasks-file",
            tasks.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--vocab",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ex = example_pairs(&out);
        assert_eq!(ex.len(), 2);
        assert!(ex
            .iter()
            .all(|(i, t)| i.len() <= 64 && t.len() <= 16 && i.last() == Some(&1)));
    }
    // Unknown key: named, with its line.
    std::fs::write(
        &tasks,
        "[[task]]\nname = \"x\"\nsequense_length = { inputs = 1 }\n",
    )
    .unwrap();
    let o = t5mix(&["tasks", "--tasks-file", tasks.to_str().unwrap(), "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("my_tasks.toml")
            && err.contains("sequense_length")
            && err.contains("line 3"),
        "{err}"
    );
    // Bad template.
    std::fs::write(
        &tasks,
        "[[task]]\nname = \"y\"\npreprocessors = [{ text = { kind = \"template\", inputs = \"q: {q\", targets = \"{a}\" } }, \"tokenize\"]\n[task.source]\nkind = \"files\"\nformat = { kind = \"jsonl\" }\nsplits = { train = [\"t.jsonl\"] }\n",
    )
    .unwrap();
    let o = t5mix(&["tasks", "--tasks-file", tasks.to_str().unwrap(), "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("task y")
            && err.contains("inputs")
            && err.contains("unclosed"),
        "{err}"
    );
    // A missing column names the file and row.
    std::fs::write(
        &tasks,
        "[[task]]\nname = \"z\"\npreprocessors = [{ text = { kind = \"template\", inputs = \"{question}\", targets = \"{a}\" } }, \"tokenize\", \"append_eos_after_trim\"]\n[task.source]\nkind = \"files\"\nformat = { kind = \"jsonl\" }\nsplits = { train = [\"train.jsonl\"] }\n",
    )
    .unwrap();
    {
        let o = t5mix(&[
            "build",
            "--task",
            "z",
            "--tasks-file",
            tasks.to_str().unwrap(),
            "--input",
            data.to_str().unwrap(),
            "--vocab",
            model.to_str().unwrap(),
            "--out",
            dir.path().join("o2").to_str().unwrap(),
            "-q",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success()
                && err.contains("train.jsonl")
                && err.contains("row 1")
                && err.contains("\"question\""),
            "{err}"
        );
    }
    // Unknown keys inside a nested table, and a feature of length 0 with EOS.
    for (text, want) in [
        (
            "[[task]]\nname = \"u\"\npreprocessors = [\"tokenize\"]\n[task.source]\nkind = \"files\"\nformat = { kind = \"jsonl\", bogus = 3 }\nsplits = { train = [\"t.jsonl\"] }\n",
            "unknown field `bogus`",
        ),
        (
            "[[task]]\nname = \"v\"\npreprocessors = [{ text = { kind = \"template\", inputs = \"{q}\", targets = \"{a}\" } }, \"tokenize\", \"append_eos_after_trim\"]\noutput_features = { inputs = { length = 0 }, targets = { length = 8 } }\n[task.source]\nkind = \"files\"\nformat = { kind = \"jsonl\" }\nsplits = { train = [\"t.jsonl\"] }\n",
            "no room for EOS",
        ),
    ] {
        std::fs::write(&tasks, text).unwrap();
        let o = t5mix(&["tasks", "--tasks-file", tasks.to_str().unwrap(), "list"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{err}");
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn mixture_shards_sample_task_caches_by_rate() {
    let (model, glue) = (
        shared_file("t5-spm/spiece.model"),
        shared_file("glue-hf-dummy"),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).display().to_string();
    let m = model.to_str().unwrap();
    common::sample_span_corruption(dir.path(), &model, "inputs=64,targets=14");
    ok(&[
        "build",
        "--task",
        "glue_rte",
        "--input",
        glue.join("rte").to_str().unwrap(),
        "--vocab",
        m,
        "--out",
        &p("rte"),
        "-q",
    ]);
    let tasks = dir.path().join("mix.toml");
    std::fs::write(
        &tasks,
        r#"
[[mixture]]
name = "c4_and_rte"
members = [
  { kind = "task", name = "c4_span_corruption", rate = { kind = "fixed", value = 3.0 } },
  { kind = "task", name = "glue_rte", rate = { kind = "fixed", value = 1.0 } },
]
"#,
    )
    .unwrap();
    let t = tasks.to_str().unwrap();
    let build = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "build",
            "--mixture",
            "c4_and_rte",
            "--tasks-file",
            t,
            "--caches",
            &p("c4"),
            &p("rte"),
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        args.extend(
            [
                "--examples",
                "400",
                "--shard-examples",
                "100",
                "--seed",
                "5",
                "--out",
                out,
            ]
            .map(str::to_string),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&refs);
    };
    build(&p("mix"), &[]);
    let mix = example_pairs(&dir.path().join("mix"));
    assert_eq!(mix.len(), 400);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("mix/manifest.json")).unwrap())
            .unwrap();
    let c4 = manifest["tasks"]["c4_span_corruption"]["examples"]
        .as_u64()
        .unwrap();
    assert!((260..340).contains(&c4), "about 3/4 from c4: {c4}");
    assert_eq!(manifest["probabilities"]["glue_rte"], 0.25);
    // Resume and workers give the same bytes.
    let first = shard_bytes(&dir.path().join("mix"));
    std::fs::remove_file(dir.path().join("mix").join(&first[2].0)).unwrap();
    build(&p("mix"), &[]);
    assert_eq!(shard_bytes(&dir.path().join("mix")), first);
    build(&p("w"), &["--worker-index", "1", "--num-workers", "2"]);
    assert!(!dir.path().join("w/manifest.json").exists());
    build(&p("w"), &["--worker-index", "0", "--num-workers", "2"]);
    assert_eq!(shard_bytes(&dir.path().join("w")), first);
    assert!(dir.path().join("w/manifest.json").exists());
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn preview_shows_text_and_ids() {
    let (model, glue) = (
        shared_file("t5-spm/spiece.model"),
        shared_file("glue-hf-dummy"),
    );
    let o = t5mix(&[
        "tasks",
        "preview",
        "glue_stsb",
        "--input",
        glue.join("stsb").to_str().unwrap(),
        "--vocab",
        model.to_str().unwrap(),
        "-n",
        "2",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("stsb sentence1: A plane is taking off.")
            && out.contains("targets:     5.0")
            && out.contains("targets:     3.75"),
        "{out}"
    );
    assert_eq!(out.matches("--- glue_stsb example").count(), 2);
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn wmt_task_from_parallel_files_equals_seqio() {
    let (model, wmt, reference) = (
        shared_file("t5-spm/spiece.model"),
        shared_file("wmt-ende-opennmt"),
        shared_file("t5-reference/glue_format.jsonl"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wmt");
    let o = t5mix(&[
        "build",
        "--task",
        "wmt_t2t_ende",
        "--input",
        wmt.to_str().unwrap(),
        "--vocab",
        model.to_str().unwrap(),
        "--split",
        "validation",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let want: Vec<(Vec<u32>, Vec<u32>)> = std::fs::read_to_string(reference)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["task"] == "wmt_t2t_ende_v003")
        .map(|r| (ids(&r["inputs_ids"]), ids(&r["targets_ids"])))
        .collect();
    assert_eq!(want.len(), 50);
    assert_eq!(example_pairs(&out), want);
}
