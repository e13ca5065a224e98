//! Fuzzing task files: random edits of a valid TOML task file (and random
//! bytes), a fixed seed, a bounded number of cases — each gives tasks or an
//! error naming the file, never a panic.

use proptest::prelude::*;
#[path = "../../tests/support/fuzz.rs"]
mod support;
use t5mix_tasks::Registry;

const VALID: &str = r#"
[[task]]
name = "my_qa"
description = "questions"
preprocessors = [
  { text = { kind = "template", inputs = "q: {q}", targets = "{a}" } },
  "tokenize",
  { denoise = { name = "span_corruption", noise_density = 0.15, mean_noise_span_length = 3.0 } },
  "append_eos_after_trim",
]
output_features = { inputs = { length = 64 }, targets = { length = 16, add_eos = true } }
metrics = ["exact_match", "bleu"]
postprocessor = { kind = "string_label", labels = ["no", "yes"] }
[task.source]
kind = "files"
format = { kind = "tsv", header = false, columns = ["q", "a"] }
splits = { train = ["train.tsv|t.tsv"] }

[[mixture]]
name = "m"
members = [
  { kind = "task", name = "my_qa", rate = { kind = "fixed", value = 3.0 } },
  { kind = "task", name = "glue_rte", rate = { kind = "num_examples", maximum = 100.0, temperature = 2.0 } },
]
"#;

#[test]
fn task_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.toml");
    // TOML is text: the edits stay in ASCII
    let strategy = support::inputs(VALID.as_bytes().to_vec(), 300)
        .prop_map(|v| v.into_iter().map(|b| b % 128).collect::<Vec<u8>>());
    let mut runner = support::runner(31, 600);
    runner
        .run(&strategy, |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            let mut reg = Registry::builtin();
            if let Err(e) = reg.add_toml_file(&path) {
                assert!(e.to_string().contains("tasks.toml"), "{e}");
            }
            let _ = reg.to_string();
            Ok(())
        })
        .unwrap();
    // the valid file itself loads
    std::fs::write(&path, VALID).unwrap();
    assert_eq!(
        Registry::builtin().add_toml_file(&path).unwrap(),
        ["my_qa", "m"]
    );
}
