//! A task registered in Rust — its own row preprocessor, token
//! preprocessor, postprocessor and metric — built through its front door,
//! mixed with another task and scored by the evaluator.

use t5mix_pipeline::shards::read_example_shard;
use t5mix_pipeline::shared_data::shared_file;
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::supervised::{FileFormat, Row};
use t5mix_tasks::{
    pair, BuildOptions, Evaluator, Metric, Mixture, MixtureOptions, MixtureSize, Preprocessor,
    Rate, Registry, Source, Task, TokenContext, Tokens, Value,
};

fn shout_qa() -> Task {
    Task::new(
        "shout_qa",
        Source::files(
            FileFormat::Jsonl {},
            &[("train", "train.jsonl"), ("validation", "train.jsonl")],
        ),
    )
    .description("uppercase trivia")
    .preprocessor(Preprocessor::rows("shout", |row: &Row| {
        let q = row.get("q").ok_or("no column q")?;
        Ok(pair(
            format!("trivia: {}", q.to_uppercase()),
            row["a"].clone(),
        ))
    }))
    .preprocessor(Preprocessor::Tokenize)
    // a token-level step: drop the first input token, append a random one
    // from the example's own stream
    .preprocessor(Preprocessor::tokens(
        "rotate",
        |t: &mut Tokens, cx: &mut TokenContext<'_>| {
            if t.inputs.is_empty() {
                return Err("empty inputs".into());
            }
            t.inputs.remove(0);
            t.inputs.push(3 + cx.rng.below(100) as u32);
            Ok(())
        },
    ))
    .preprocessor(Preprocessor::AppendEosAfterTrim)
    .lengths(64, 8)
    .postprocess_fn("lower", |s: &str, _: &Row, _: bool| {
        Value::Text(s.to_lowercase())
    })
    .metric(Metric::ExactMatch)
    .metric_fn("length_match", |t: &[Value], p: &[Value]| {
        let same = t
            .iter()
            .zip(p)
            .filter(|(a, b)| format!("{a:?}").len() == format!("{b:?}").len())
            .count();
        Ok(vec![("length_match".into(), same as f64)])
    })
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn a_rust_registered_task_builds_mixes_and_scores() {
    let spm = shared_file("t5-spm/spiece.model");
    let vocab = Vocabulary::load(&spm, 100).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("train.jsonl"),
        "{\"q\": \"who wrote hamlet?\", \"a\": \"Shakespeare\"}\n{\"q\": \"capital of france?\", \"a\": \"Paris\"}\n",
    )
    .unwrap();
    let mut reg = Registry::builtin();
    reg.add_task(shout_qa()).unwrap();
    reg.add_mixture(Mixture::new("shout_twice").task("shout_qa", Rate::fixed(1.0)))
        .unwrap();
    let task = reg.tasks.task("shout_qa").unwrap();
    let input = [dir.path().display().to_string()];
    let mut o = BuildOptions::new(&vocab);
    o.pretokenized = true;
    let out = dir.path().join("out");
    let built = task.build_cache(&input, &out, &o, |_, _| {}).unwrap();
    let manifest = built.manifest.unwrap();
    assert_eq!(manifest.stats.examples, 2);
    assert_eq!(manifest.sequence_length.inputs, 64);
    let (examples, meta) = read_example_shard(&out.join(&manifest.shards[0])).unwrap();
    let e = &examples[0];
    assert_eq!(e.task, "shout_qa");
    assert_eq!(
        e.pretokenized.as_ref().unwrap(),
        &(
            "trivia: WHO WROTE HAMLET?".to_string(),
            "Shakespeare".to_string()
        )
    );
    // the token step ran: the first id is gone, a random one and EOS follow
    let plain = vocab.encode("trivia: WHO WROTE HAMLET?");
    assert_eq!(&e.inputs[..plain.len() - 1], &plain[1..]);
    assert_eq!(e.inputs.len(), plain.len() + 1);
    assert_eq!(*e.inputs.last().unwrap(), 1);
    assert!(meta
        .iter()
        .any(|(k, v)| k == "t5mix.task" && v == "shout_qa"));
    // the same options give the same bytes (the token step's stream is keyed)
    let again = dir.path().join("again");
    task.build_cache(&input, &again, &o, |_, _| {}).unwrap();
    assert_eq!(
        std::fs::read(out.join(&manifest.shards[0])).unwrap(),
        std::fs::read(again.join(&manifest.shards[0])).unwrap()
    );

    // mixed through the registry's front door
    let mix = dir.path().join("mix");
    let m = reg
        .mixtures
        .build(
            "shout_twice",
            std::slice::from_ref(&out),
            &mix,
            &MixtureOptions::default(),
        )
        .unwrap();
    assert_eq!(m.examples, 2);
    assert!(m.manifest.is_some());
    // --epochs is honoured and checked; a rerun with another seed is refused
    let out_cache = out.clone();
    let sized = |size: MixtureSize, seed: u64, out: &str| {
        let o = MixtureOptions {
            size,
            seed,
            ..MixtureOptions::default()
        };
        reg.mixtures.build(
            "shout_twice",
            std::slice::from_ref(&out_cache),
            &dir.path().join(out),
            &o,
        )
    };
    assert_eq!(
        sized(MixtureSize::Epochs(2.0), 0, "mix2").unwrap().examples,
        4
    );
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(sized(MixtureSize::Epochs(bad), 0, "mix3").is_err(), "{bad}");
    }
    let e = sized(MixtureSize::Epochs(1.0), 7, "mix")
        .unwrap_err()
        .to_string();
    assert!(e.contains("t5mix.seed = 0"), "{e}");

    // scored with its postprocessor and both metrics
    let ev = Evaluator::new(
        &reg.tasks,
        &["shout_qa".into()],
        &input,
        "validation",
        vocab.clone(),
        None,
    )
    .unwrap();
    let answers = [vocab.encode("SHAKESPEARE"), vocab.encode("london")];
    let scores = ev
        .evaluate(&mut |inputs: &[Vec<u32>]| {
            assert_eq!(inputs.len(), 2);
            answers.to_vec()
        })
        .unwrap();
    assert_eq!(scores[0].metrics[0], ("exact_match".to_string(), 50.0));
    assert_eq!(scores[0].metrics[1].0, "length_match");

    // a row preprocessor's error names the file and row
    std::fs::write(dir.path().join("train.jsonl"), "{\"x\": 1}\n").unwrap();
    let err = task
        .build_cache(&input, &dir.path().join("bad"), &o, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.jsonl: row 1: no column q"), "{err}");
}

#[test]
fn chains_are_checked_when_registered() {
    let mut reg = Registry::default();
    let src = Source::files(FileFormat::Jsonl {}, &[("train", "t.jsonl")]);
    let no_tokenize = Task::new("a", src.clone()).preprocessor(Preprocessor::AppendEosAfterTrim);
    let e = reg.add_task(no_tokenize).unwrap_err().to_string();
    assert!(e.contains("exactly one \"tokenize\""), "{e}");
    let late_row_step = Task::new("b", src)
        .preprocessor(Preprocessor::Tokenize)
        .preprocessor(Preprocessor::rows("late", |r: &Row| Ok(r.clone())));
    let e = reg.add_task(late_row_step).unwrap_err().to_string();
    assert!(e.contains("row-level but comes after"), "{e}");
    let clean_without_rekey =
        Task::new("c", Source::CleanShards {}).preprocessor(Preprocessor::Tokenize);
    let e = reg.add_task(clean_without_rekey).unwrap_err().to_string();
    assert!(e.contains("rekey"), "{e}");
}

/// A TOML task maps onto the same structure: token preprocessors with
/// parameters and metrics by name; T5's span corruption declared in TOML
/// builds the examples the built-in task builds (under its own name, so its
/// own random streams: the same shapes and sentinels, not the same bytes).
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn toml_tasks_pick_token_preprocessors_and_metrics_by_name() {
    let spm = shared_file("t5-spm/spiece.model");
    let vocab = Vocabulary::load(&spm, 100).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("tasks.toml");
    std::fs::write(
        &toml,
        r#"
[[task]]
name = "my_span_corruption"
preprocessors = [
  { rekey = { targets = "text" } },
  "tokenize",
  { denoise = { name = "span_corruption", noise_density = 0.15, mean_noise_span_length = 3.0 } },
  "append_eos_after_trim",
]
output_features = { inputs = { length = 64 }, targets = { length = 16 } }
metrics = ["exact_match"]
[task.source]
kind = "clean_shards"
"#,
    )
    .unwrap();
    let mut reg = Registry::builtin();
    assert_eq!(
        reg.add_toml_file(&toml).unwrap(),
        vec!["my_span_corruption"]
    );
    let mine = reg.tasks.task("my_span_corruption").unwrap();
    let builtin = reg.tasks.task("c4_span_corruption").unwrap();
    assert_eq!(mine.preprocessors, builtin.preprocessors);
    assert_eq!(mine.effective_metrics(), vec![Metric::ExactMatch]);
    // both build from the same clean text with the same lengths
    let text: String = (0..40)
        .map(|i| format!("Sentence number {i} says something about the weather today. "))
        .collect();
    let clean = dir.path().join("clean");
    let mut w = t5mix_pipeline::clean::output::ShardWriter::new(
        &clean,
        t5mix_pipeline::clean::OutputFormat::Parquet,
        usize::MAX,
        vec![],
    )
    .unwrap();
    for k in 0..4 {
        w.push(t5mix_pipeline::clean::CleanPage {
            text: format!("{k} {text}"),
            url: format!("u{k}"),
            timestamp: String::new(),
            split: "train".into(),
        })
        .unwrap();
    }
    w.finish().unwrap();
    let mut o = BuildOptions::new(&vocab);
    o.allow_partial = true; // shards written here, without `t5mix clean`'s manifest
    o.sequence_length = Some(t5mix_pipeline::features::SequenceLength {
        inputs: 64,
        targets: 16,
    });
    let input = [clean.display().to_string()];
    let a = mine
        .build_cache(&input, &dir.path().join("a"), &o, |_, _| {})
        .unwrap();
    let b = builtin
        .build_cache(&input, &dir.path().join("b"), &o, |_, _| {})
        .unwrap();
    let (a, b) = (a.manifest.unwrap(), b.manifest.unwrap());
    assert_eq!(a.stats.examples, b.stats.examples);
    assert_eq!(a.stats.inputs_max_tokens, 64);
    assert_eq!(a.objective, b.objective);
}
