//! Mixing rates against seqio / t5.data (../shared/data/t5-reference/mixing_rates.json).

use std::collections::BTreeMap;

use serde_json::Value;
use t5mix_pipeline::shared_data::shared_file;
use t5mix_tasks::{rate_num_examples, Mixture, MixtureRegistry, Rate};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

fn reference() -> Value {
    let p = shared_file("t5-reference/mixing_rates.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn counts(r: &Value) -> BTreeMap<String, u64> {
    r["example_counts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn mixture_tasks(r: &Value, name: &str) -> Vec<String> {
    r["mixtures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap().to_string())
        .collect()
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn rate_num_examples_grid_matches_seqio() {
    let r = reference();
    let counts = counts(&r);
    let mut n = 0;
    for row in r["rate_num_examples_grid"].as_array().unwrap() {
        let maximum = row["maximum"].as_f64();
        let t = row["temperature"].as_f64().unwrap();
        let s = row["scale"].as_f64().unwrap();
        for (task, want) in row["rates"].as_object().unwrap() {
            let got = rate_num_examples(counts[task], maximum, t, s);
            assert!(
                close(got, want.as_f64().unwrap()),
                "{task} max={maximum:?} T={t} S={s}: {got} vs {want}"
            );
            n += 1;
        }
    }
    assert_eq!(n, 18 * 29);
}

fn names(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn mixtures_match_seqio() {
    let r = reference();
    let counts = counts(&r);
    let count = |t: &str| counts.get(t).copied();
    let glue = mixture_tasks(&r, "glue_v002_proportional");
    let super_glue = mixture_tasks(&r, "super_glue_v102_proportional");
    let all: Vec<String> = counts.keys().cloned().collect();
    let mut reg = MixtureRegistry::default();
    reg.add(Mixture::new("glue_v002_proportional").tasks(names(&glue), Rate::examples()))
        .unwrap();
    reg.add(
        Mixture::new("super_glue_v102_proportional").tasks(names(&super_glue), Rate::examples()),
    )
    .unwrap();
    reg.add(Mixture::new("glue_mnli_and_dev_v002").tasks(
        names(&mixture_tasks(&r, "glue_mnli_and_dev_v002")),
        Rate::fixed(1.0),
    ))
    .unwrap();
    for t in [1.0, 2.0, 3.0] {
        reg.add(
            Mixture::new(&format!("t5ref_glue_rate_num_examples_T{t:.1}"))
                .tasks(names(&glue), Rate::examples_with(None, t, 1.0)),
        )
        .unwrap();
        for (mname, m) in [
            ("None", None),
            ("524288", Some(524288.0)),
            ("1000000.0", Some(1e6)),
        ] {
            reg.add(
                Mixture::new(&format!("t5ref_all_rate_num_examples_max{mname}_T{t:.1}"))
                    .tasks(names(&all), Rate::examples_with(m, t, 1.0)),
            )
            .unwrap();
        }
    }
    reg.add(
        Mixture::new("t5ref_nested")
            .submixture("glue_v002_proportional", 300000.0)
            .submixture("super_glue_v102_proportional", 100000.0)
            .task("squad_v010_allanswers", Rate::examples())
            .task("c4_v020_unsupervised", Rate::fixed(710000.0)),
    )
    .unwrap();
    let mut checked = 0;
    for m in r["mixtures"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        if reg.get(name).is_none() {
            continue; // en_mix, all_*: T5's own task lists, not rebuilt here.
        }
        let rates = reg.task_rates(name, &count).unwrap();
        let probs = reg.task_probabilities(name, &count).unwrap();
        let total: f64 = rates.values().sum();
        assert!(
            close(total, m["total_rate"].as_f64().unwrap()),
            "{name} total {total}"
        );
        let want = m["tasks"].as_array().unwrap();
        assert_eq!(rates.len(), want.len(), "{name}");
        for t in want {
            let task = t["task"].as_str().unwrap();
            assert!(
                close(rates[task], t["rate"].as_f64().unwrap()),
                "{name}/{task}: {} vs {}",
                rates[task],
                t["rate"]
            );
            assert!(
                close(probs[task], t["probability"].as_f64().unwrap()),
                "{name}/{task} probability"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 16);
}

#[test]
fn registry_errors() {
    let mut reg = MixtureRegistry::default();
    assert!(reg.add(Mixture::new("bad name!")).is_err());
    assert!(reg
        .add(Mixture::new("m").submixture("missing", 1.0))
        .is_err());
    reg.add(Mixture::new("m").task("t", Rate::examples()))
        .unwrap();
    assert!(reg.add(Mixture::new("m")).is_err(), "duplicate");
    let err = reg.task_rates("m", &|_| None).unwrap_err().to_string();
    assert!(err.contains("no example count for task \"t\""), "{err}");
}
