//! T5's supervised formats against the real seqio Tasks' outputs
//! (../shared/data/t5-reference/glue_format.jsonl, stsb_labels.jsonl):
//! the text and, with the T5 vocabulary, the token ids.

use serde_json::Value;
use t5mix_pipeline::preprocessors::append_eos_after_trim;
use t5mix_pipeline::shared_data::shared_or_skip;
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::formats::{
    glue, squad, stsb_inputs, stsb_target, summarize, translate, GlueBenchmark,
};

fn rows(rel: &str, test: &str) -> Option<Vec<Value>> {
    let p = shared_or_skip(rel, test)?;
    Some(
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

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

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn every_builtin_format_matches_t5() {
    let test = "every_builtin_format_matches_t5";
    let Some(rows) = rows("t5-reference/glue_format.jsonl", test) else {
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
            assert_eq!(i, ids(&r["inputs_ids"]), "{} inputs ids", s(r, "task"));
            assert_eq!(t, ids(&r["targets_ids"]), "{} targets ids", s(r, "task"));
        }
    }
}

#[test]
fn stsb_labels_match_t5_on_all_rows() {
    let Some(rows) = rows(
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
