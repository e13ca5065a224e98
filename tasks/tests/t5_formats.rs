//! T5's supervised formats against the real seqio Tasks' outputs
//! (../shared/data/t5-reference/glue_format.jsonl, stsb_labels.jsonl):
//! the text and, with the T5 vocabulary, the token ids.

use serde_json::Value;
use t5mix_pipeline::preprocessors::append_eos_after_trim;
use t5mix_pipeline::shared_data::{json_ids, jsonl_or_skip, shared_or_skip};
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
fn every_builtin_format_matches_t5() {
    let test = "every_builtin_format_matches_t5";
    let Some(rows) = jsonl_or_skip("t5-reference/glue_format.jsonl", test) else {
        return;
    };
    let vocab =
        shared_or_skip("t5-spm/spiece.model", test).map(|p| Vocabulary::load(&p, 100).unwrap());
    assert_eq!(rows.len(), 203);
    for r in &rows {
        let (inputs, targets) = format_row(r);
        assert_eq!(inputs, s(r, "inputs"), "{} inputs", s(r, "task"));
        assert_eq!(targets, s(r, "targets"), "{} targets", s(r, "task"));
        if let Some(v) = &vocab {
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
fn stsb_labels_match_t5_on_all_rows() {
    let Some(rows) = jsonl_or_skip(
        "t5-reference/stsb_labels.jsonl",
        "stsb_labels_match_t5_on_all_rows",
    ) else {
        return;
    };
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
fn squad_and_cnn_sources_match_t5() {
    use t5mix_tasks::supervised::{read_rows, FileFormat, TextFormat};
    let test = "squad_and_cnn_sources_match_t5";
    let (Some(rows), Some(root)) = (
        jsonl_or_skip("t5-reference/glue_format.jsonl", test),
        shared_or_skip("t5-reference", test),
    ) else {
        return;
    };
    let root = root.parent().unwrap().to_path_buf();
    let vocab =
        shared_or_skip("t5-spm/spiece.model", test).map(|p| Vocabulary::load(&p, 100).unwrap());
    let squad_rows = read_rows(
        &root.join("squad-allennlp/squad.json"),
        &FileFormat::SquadJson,
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
            let row = read_rows(&file, &FileFormat::CnnStory).unwrap().remove(0);
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
        if let Some(v) = &vocab {
            let mut ii = v.encode(&i);
            append_eos_after_trim(&mut ii, 512, 1);
            assert_eq!(ii, json_ids(&r["inputs_ids"]));
        }
        checked += 1;
    }
    assert_eq!(checked, 30);
}
