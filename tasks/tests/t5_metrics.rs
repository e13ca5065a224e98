//! Postprocessors and metrics against t5.evaluation
//! (../shared/data/t5-reference/metrics.jsonl). ROUGE: every per-example
//! score, and T5's aggregate where it does not depend on its bootstrap.

use serde_json::Value;
use t5mix_pipeline::shared_data::shared_file;
use t5mix_tasks::metrics::*;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn close(got: f64, want: &Value) -> bool {
    match want.as_f64() {
        Some(w) => (got - w).abs() <= 1e-9 * w.abs().max(1.0),
        None => want.as_str() == Some("NaN") && got.is_nan(),
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn metrics_match_t5() {
    let p = shared_file("t5-reference/metrics.jsonl");
    let rows: Vec<Value> = std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let labels = ["negative", "positive"];
    let (mut checked, mut skipped) = (0, 0);
    for r in &rows {
        let metric = r["metric"].as_str().unwrap();
        let case = r["case"].as_str().unwrap();
        let result = &r["result"];
        match metric {
            "accuracy" | "matthews_corrcoef" | "f1_score_with_invalid" => {
                let t: Vec<i64> = strings(&r["target_strings"])
                    .iter()
                    .map(|s| string_label_to_class_id(s, &labels))
                    .collect();
                let p: Vec<i64> = strings(&r["prediction_strings"])
                    .iter()
                    .map(|s| string_label_to_class_id(s, &labels))
                    .collect();
                let want_p: Vec<i64> = r["predictions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                assert_eq!(p, want_p, "{metric}/{case}: postprocessor");
                let (got, key) = match metric {
                    "accuracy" => (accuracy(&t, &p), "accuracy"),
                    "matthews_corrcoef" => (matthews_corrcoef(&t, &p), "matthews_corrcoef"),
                    _ => (f1_score_with_invalid(&t, &p), "f1"),
                };
                assert!(
                    close(got, &result[key]),
                    "{metric}/{case}: {got} vs {}",
                    result[key]
                );
            }
            "pearson_corrcoef" | "spearman_corrcoef" => {
                let t: Vec<f64> = strings(&r["target_strings"])
                    .iter()
                    .map(|s| string_to_float(s, -1.0))
                    .collect();
                let p: Vec<f64> = strings(&r["prediction_strings"])
                    .iter()
                    .map(|s| string_to_float(s, -1.0))
                    .collect();
                let got = if metric == "pearson_corrcoef" {
                    pearson_corrcoef(&t, &p)
                } else {
                    spearman_corrcoef(&t, &p)
                };
                assert!(
                    close(got, &result[metric]),
                    "{metric}/{case}: {got} vs {}",
                    result[metric]
                );
            }
            "squad" => {
                let t: Vec<Vec<String>> = r["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(strings)
                    .collect();
                let (em, f1) = squad(&t, &strings(&r["predictions"]));
                assert!(
                    close(em, &result["em"]) && close(f1, &result["f1"]),
                    "squad/{case}: {em} {f1} vs {result}"
                );
            }
            "bleu" => {
                let refs: Vec<Vec<String>> = match r["targets"][0].as_array() {
                    Some(_) => r["targets"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(strings)
                        .collect(),
                    None => vec![strings(&r["targets"])],
                };
                let got = bleu(&refs, &strings(&r["predictions"]));
                assert!(
                    close(got, &result["bleu"]),
                    "bleu/{case}: {got} vs {}",
                    result["bleu"]
                );
            }
            "rouge" => {
                let t = strings(&r["targets"]);
                let p = strings(&r["predictions"]);
                let per = r["per_example_scores"].as_array().unwrap();
                for (k, (tt, pp)) in t.iter().zip(&p).enumerate() {
                    let got = rouge_example(tt, pp);
                    for (j, key) in ["rouge1", "rouge2", "rougeLsum"].iter().enumerate() {
                        for (f, v) in [
                            ("precision", got[j].precision),
                            ("recall", got[j].recall),
                            ("fmeasure", got[j].fmeasure),
                        ] {
                            assert!(
                                close(v, &per[k][key][f]),
                                "rouge/{case} example {k} {key} {f}: {v} vs {}",
                                per[k][key][f]
                            );
                        }
                    }
                }
                let agg = rouge_bootstrap(&t, &p, 0);
                for (j, key) in ["rouge1", "rouge2", "rougeLsum"].iter().enumerate() {
                    assert!(
                        close(agg[j], &result[*key]),
                        "rouge/{case} {key}: {} vs {}",
                        agg[j],
                        result[*key]
                    );
                }
            }
            _ => {
                skipped += 1;
                continue;
            }
        }
        checked += 1;
    }
    assert_eq!((checked, skipped), (45, 0));
}

/// The bootstrap's resamples replay numpy: values printed by numpy 2.4.6 for
/// `np.random.seed(0); np.random.choice(np.arange(n), size=12)`. (The ROUGE
/// reference rows alone cannot tell: their bootstrap medians equal the means.)
#[test]
fn bootstrap_draws_replay_numpy() {
    assert_eq!(
        numpy_choice(0, 7, 12),
        vec![4, 5, 0, 3, 3, 3, 1, 3, 5, 2, 4, 6]
    );
    assert_eq!(
        numpy_choice(0, 3, 12),
        vec![0, 1, 0, 1, 1, 2, 0, 2, 0, 0, 0, 2]
    );
}

/// T5 scores SQuAD against every answer (the `qa` postprocessor gives the
/// targets as the list of answers; `squad` takes the max over them), while
/// the training target is the first answer.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn squad_is_scored_against_all_answers() {
    use t5mix_pipeline::vocab::Vocabulary;
    use t5mix_tasks::{TaskRegistry, Value};
    let spm = t5mix_pipeline::shared_data::shared_file("t5-spm/spiece.model");
    let vocab = Vocabulary::load(&spm, 100).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let qa = |q: &str, answers: &[&str]| {
        serde_json::json!({"id": q, "question": q,
            "answers": answers.iter().map(|a| serde_json::json!({"text": a, "answer_start": 0})).collect::<Vec<_>>()})
    };
    let data = serde_json::json!({"data": [{"title": "t", "paragraphs": [{
        "context": "Super Bowl 50 was played at Levi's Stadium in Santa Clara.",
        "qas": [qa("Where was it played?", &["Santa Clara", "Levi's Stadium"]), qa("Which game?", &["Super Bowl 50"])]
    }]}]});
    std::fs::write(dir.path().join("dev-v1.1.json"), data.to_string()).unwrap();
    let reg = TaskRegistry::builtin();
    let task = reg.task("squad_v010_allanswers").unwrap();
    let set = task
        .eval_set(
            &[dir.path().display().to_string()],
            "validation",
            &vocab,
            None,
        )
        .unwrap();
    assert_eq!(set.examples[0].target_text, "Santa Clara");
    assert_eq!(
        set.examples[0].target,
        Value::Texts(vec!["Santa Clara".into(), "Levi's Stadium".into()])
    );
    let scores = set
        .score(&["Levi's Stadium".into(), "Super Bowl".into()])
        .unwrap();
    // the first prediction matches the second answer: EM 1 of 2
    assert_eq!(scores[0], ("em".to_string(), 50.0));
    assert_eq!(scores[1].0, "f1");
    assert!(
        (scores[1].1 - 100.0 * (1.0 + 0.8) / 2.0).abs() < 1e-9,
        "{scores:?}"
    );
}
