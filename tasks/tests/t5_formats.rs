//! T5's supervised formats against the real seqio Tasks' outputs
//! (../shared/data/t5-reference/glue_format.jsonl, stsb_labels.jsonl):
//! the text and, with the T5 vocabulary, the token ids.

use serde_json::Value;
use t5mix_pipeline::preprocessors::append_eos_after_trim;
use t5mix_pipeline::shared_data::{json_ids, shared_file, shared_jsonl};
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::formats::{
    glue, squad, stsb_inputs, stsb_target, summarize, translate, GlueBenchmark,
};

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no string {k} in {v}"))
}

fn format_row(r: &Value) -> (String, String) {
    let task = s(r, "task");
    let ex = &r["tfds_example"];
    match s(r, "family") {
        "glue" => {
            let config = s(r, "tfds_config");
            if config == "stsb" {
                let label = ex["label"].as_f64().unwrap() as f32;
                return (
                    stsb_inputs(s(ex, "sentence1"), s(ex, "sentence2")),
                    stsb_target(label, 26),
                );
            }
            let b = GlueBenchmark::from_config(config).unwrap();
            let feats: Vec<(&str, &str)> =
                b.feature_names().iter().map(|k| (*k, s(ex, k))).collect();
            glue(b, &feats, ex["label"].as_i64().unwrap())
        }
        "translate" => {
            let tgt = match task {
                "wmt_t2t_ende_v003" => "de",
                "wmt16_enro_v003" => "ro",
                _ => "fr",
            };
            translate("en", tgt, s(ex, "en"), s(ex, tgt)).unwrap()
        }
        "summarize" => summarize(s(ex, "article"), s(ex, "highlights")),
        "squad" => {
            let answer = ex["answers"]["text"][0].as_str().unwrap();
            squad(
                s(ex, "question"),
                s(ex, "context"),
                answer,
                task == "squad_v010_allanswers",
            )
        }
        f => panic!("family {f}"),
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn every_builtin_format_matches_t5() {
    let rows = shared_jsonl("t5-reference/glue_format.jsonl");
    let v = Vocabulary::load(&shared_file("t5-spm/spiece.model"), 100).unwrap();
    assert_eq!(rows.len(), 203);
    for r in &rows {
        let (inputs, targets) = format_row(r);
        assert_eq!(inputs, s(r, "inputs"), "{} inputs", s(r, "task"));
        assert_eq!(targets, s(r, "targets"), "{} targets", s(r, "task"));
        {
            let mut i = v.encode(&inputs);
            append_eos_after_trim(&mut i, 512, 1);
            let mut t = v.encode(&targets);
            append_eos_after_trim(&mut t, 128, 1);
            assert_eq!(i, json_ids(&r["inputs_ids"]), "{} inputs ids", s(r, "task"));
            assert_eq!(
                t,
                json_ids(&r["targets_ids"]),
                "{} targets ids",
                s(r, "task")
            );
        }
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn stsb_labels_match_t5_on_all_rows() {
    let rows = shared_jsonl("t5-reference/stsb_labels.jsonl");
    assert_eq!(rows.len(), 7249);
    let mut classes = std::collections::BTreeSet::new();
    for r in &rows {
        let label = r["label_float32"].as_f64().unwrap() as f32;
        let got = stsb_target(label, 26);
        assert_eq!(
            got,
            s(r, "targets"),
            "row {} score {}",
            r["row"],
            s(r, "score")
        );
        classes.insert(got);
    }
    assert_eq!(classes.len(), 26);
}

/// SQuAD JSON and CNN/DailyMail story files read as tfds reads them, then
/// formatted: equal to seqio's rows (text and ids).
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn squad_and_cnn_sources_match_t5() {
    use t5mix_tasks::supervised::{read_rows, FileFormat, TextFormat};
    let (rows, root) = (
        shared_jsonl("t5-reference/glue_format.jsonl"),
        shared_file("t5-reference"),
    );
    let root = root.parent().unwrap().to_path_buf();
    let v = Vocabulary::load(&shared_file("t5-spm/spiece.model"), 100).unwrap();
    let squad_rows = read_rows(
        &root.join("squad-allennlp/squad.json"),
        &FileFormat::SquadJson {},
    )
    .unwrap();
    let mut checked = 0;
    for r in rows
        .iter()
        .filter(|r| r["family"] == "squad" || r["family"] == "summarize")
    {
        let (row, file, format) = if r["family"] == "squad" {
            let id = s(&r["tfds_example"], "id");
            let row = squad_rows.iter().find(|x| x["id"] == id).unwrap().clone();
            (
                row,
                root.join("squad-allennlp/squad.json"),
                TextFormat::Squad {
                    include_context: s(r, "task") == "squad_v010_allanswers",
                },
            )
        } else {
            let file = root.join(r["source_files"][0].as_str().unwrap());
            let row = read_rows(&file, &FileFormat::CnnStory {})
                .unwrap()
                .remove(0);
            assert_eq!(row["article"], s(&r["tfds_example"], "article"));
            assert_eq!(row["highlights"], s(&r["tfds_example"], "highlights"));
            (
                row,
                file,
                TextFormat::Summarize {
                    article: "article".into(),
                    summary: "highlights".into(),
                },
            )
        };
        let (i, t) = format.format(&row, &file, 1).unwrap();
        assert_eq!(
            (i.as_str(), t.as_str()),
            (s(r, "inputs"), s(r, "targets")),
            "{}",
            s(r, "task")
        );
        {
            let mut ii = v.encode(&i);
            append_eos_after_trim(&mut ii, 512, 1);
            assert_eq!(ii, json_ids(&r["inputs_ids"]));
        }
        checked += 1;
    }
    assert_eq!(checked, 30);
}

/// Every GLUE reference row read through the registered task: its split's
/// files in the GLUE download layout (header-less CoLA, the MSR files of
/// MRPC split by dev_ids, AX as MNLI), the row at the example's index,
/// formatted: equal to seqio's text.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn registered_glue_tasks_read_the_glue_files_as_tfds() {
    use t5mix_tasks::supervised::read_rows;
    use t5mix_tasks::TaskRegistry;
    let (rows, glue_dir) = (
        shared_jsonl("t5-reference/glue_format.jsonl"),
        shared_file("glue-hf-dummy"),
    );
    let reg = TaskRegistry::builtin();
    let mut checked = 0;
    for r in rows.iter().filter(|r| r["family"] == "glue") {
        let config = s(r, "tfds_config");
        let name = match config {
            "stsb" => "glue_stsb_t5".to_string(),
            c => format!("glue_{c}"),
        };
        let task = reg.get(&name).unwrap_or_else(|| panic!("no task {name}"));
        let split = match s(r, "split") {
            "validation_matched" => "validation",
            "test_matched" => "test",
            x => x,
        };
        let dir = glue_dir.join(config).display().to_string();
        let files = task.source.split_files(&name, split, &[dir]).unwrap();
        let ff = task.source.file_format(split).unwrap();
        let mut all = Vec::new();
        for f in &files {
            all.extend(
                read_rows(f, ff)
                    .unwrap()
                    .into_iter()
                    .map(|row| (f.clone(), row)),
            );
        }
        let idx = r["tfds_example"]["idx"].as_u64().unwrap() as usize;
        // MSR rows carry tfds's idx (the position in the file); others: the position
        let (file, row) = all
            .iter()
            .find(|(_, row)| row.get("idx").is_some_and(|v| v == &idx.to_string()))
            .unwrap_or_else(|| &all[idx]);
        let format = task.text_format().expect("supervised");
        let (i, t) = format.format(row, file, idx + 1).unwrap();
        assert_eq!(
            (i.as_str(), t.as_str()),
            (s(r, "inputs"), s(r, "targets")),
            "{name} {split} row {idx}"
        );
        checked += 1;
    }
    assert_eq!(checked, 87);
}

/// WMT16 en-ro from transformers' JSON Lines fixture through the registered
/// task; the en-fr tasks' format on the reference examples; CNN/DailyMail
/// split by tfds's URL lists.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn registered_translation_and_cnn_tasks_match_t5() {
    use t5mix_tasks::supervised::{read_rows, Row};
    use t5mix_tasks::TaskRegistry;
    let (rows, root) = (
        shared_jsonl("t5-reference/glue_format.jsonl"),
        shared_file("t5-reference"),
    );
    let root = root.parent().unwrap().to_path_buf();
    let reg = TaskRegistry::builtin();
    let text_format = |name: &str| reg.get(name).unwrap().text_format().unwrap().clone();
    // en-ro: rows read from val.json
    let enro = reg.get("wmt16_enro").unwrap();
    let dir = root
        .join("transformers-fixtures/wmt_en_ro")
        .display()
        .to_string();
    let files = enro
        .source
        .split_files("wmt16_enro", "validation", &[dir])
        .unwrap();
    let read = read_rows(&files[0], enro.source.file_format("validation").unwrap()).unwrap();
    let fmt = text_format("wmt16_enro");
    let mut n = 0;
    for r in rows.iter().filter(|r| r["task"] == "wmt16_enro_v003") {
        let en = s(&r["tfds_example"], "en");
        let row = read
            .iter()
            .find(|x| x["translation.en"] == en)
            .expect("the pair is in val.json");
        assert_eq!(row["translation.ro"], s(&r["tfds_example"], "ro"));
        let (i, t) = fmt.format(row, &files[0], 1).unwrap();
        assert_eq!((i.as_str(), t.as_str()), (s(r, "inputs"), s(r, "targets")));
        n += 1;
    }
    assert_eq!(n, 16);
    // en-fr: the registered formats on the reference examples
    for (task, reference) in [
        ("wmt14_enfr", "wmt14_enfr_v003"),
        ("wmt15_enfr", "wmt15_enfr_v003"),
    ] {
        let fmt = text_format(task);
        for r in rows.iter().filter(|r| r["task"] == reference) {
            let row = Row::from([
                (
                    "translation.en".to_string(),
                    s(&r["tfds_example"], "en").to_string(),
                ),
                (
                    "translation.fr".to_string(),
                    s(&r["tfds_example"], "fr").to_string(),
                ),
            ]);
            let (i, t) = fmt.format(&row, std::path::Path::new("x"), 1).unwrap();
            assert_eq!(
                (i.as_str(), t.as_str()),
                (s(r, "inputs"), s(r, "targets")),
                "{task}"
            );
        }
    }
    // CNN/DailyMail: which story goes to which split, and its text
    let cnn = reg.get("cnn_dailymail").unwrap();
    let fmt = text_format("cnn_dailymail");
    let dir = root.join("cnn-dm-allennlp").display().to_string();
    for split in ["train", "validation"] {
        let files = cnn
            .source
            .split_files("cnn_dailymail", split, std::slice::from_ref(&dir))
            .unwrap();
        let read = read_rows(&files[0], cnn.source.file_format(split).unwrap()).unwrap();
        let mut got: Vec<String> = read.iter().map(|r| r["id"].clone()).collect();
        got.sort();
        let mut want: Vec<String> = rows
            .iter()
            .filter(|r| r["family"] == "summarize" && r["split"] == split)
            .map(|r| {
                let f = r["source_files"][0].as_str().unwrap();
                f.rsplit('/')
                    .next()
                    .unwrap()
                    .trim_end_matches(".story")
                    .to_string()
            })
            .collect();
        want.sort();
        assert_eq!(got, want, "{split} stories");
        for row in &read {
            let r = rows
                .iter()
                .find(|r| {
                    r["family"] == "summarize" && s(r, "inputs").contains(&row["article"][..40])
                })
                .unwrap();
            let (i, t) = fmt.format(row, &files[0], 1).unwrap();
            assert_eq!((i.as_str(), t.as_str()), (s(r, "inputs"), s(r, "targets")));
        }
    }
}
