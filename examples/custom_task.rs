//! A user's own `t5mix`: one task written in Rust — its own row
//! preprocessor, token-level preprocessor and metric — and a mixture of it
//! with T5's span corruption, served with every `t5mix` subcommand.
//!
//! ```sh
//! cargo run --release --example custom_task -- tasks list
//! cargo run --release --example custom_task -- build --task add_numbers \
//!     --input DIR_WITH_train.jsonl --vocab spiece.model --out out/add
//! cargo run --release --example custom_task -- build --mixture add_and_c4 \
//!     --caches out/add out/c4 --out out/mix
//! cargo run --release --example custom_task -- train --data out/mix ...
//! cargo run --release --example custom_task -- eval --task add_numbers ...
//! ```
//!
//! The task reads JSON Lines rows `{"a": 12, "b": 7}` and asks for the sum.

use t5mix_tasks::supervised::{FileFormat, Row};
use t5mix_tasks::{
    pair, Metric, Mixture, Preprocessor, Rate, Registry, Source, Task, TokenContext, Tokens, Value,
};

/// `add: 12 plus 7` → `19`.
fn add_numbers() -> Task {
    let source = Source::files(
        FileFormat::Jsonl {},
        &[("train", "train.jsonl"), ("validation", "validation.jsonl")],
    );
    Task::new("add_numbers", source)
        .description("add two numbers: `add: A plus B` -> A+B (metric: within_one)")
        .preprocessor(Preprocessor::rows("add_prompt", |row: &Row| {
            let n = |k: &str| -> Result<i64, String> {
                row.get(k)
                    .ok_or(format!("no column {k:?}"))?
                    .parse()
                    .map_err(|_| format!("{k} is not a whole number"))
            };
            let (a, b) = (n("a")?, n("b")?);
            Ok(pair(format!("add: {a} plus {b}"), (a + b).to_string()))
        }))
        .preprocessor(Preprocessor::Tokenize)
        // Token-level augmentation: an input token is masked with the first
        // sentinel in one example of five (the example's own random stream).
        .preprocessor(Preprocessor::tokens(
            "mask_one_token",
            |t: &mut Tokens, cx: &mut TokenContext<'_>| {
                if !t.inputs.is_empty() && cx.rng.below(5) == 0 {
                    let i = cx.rng.below(t.inputs.len() as u64) as usize;
                    t.inputs[i] = cx.vocab.sentinel(0);
                }
                Ok(())
            },
        ))
        .preprocessor(Preprocessor::AppendEosAfterTrim)
        .lengths(32, 8)
        .postprocess_fn("to_number", |text: &str, _: &Row, _: bool| {
            match text.trim().parse::<f64>() {
                Ok(x) => Value::Float(x),
                Err(_) => Value::Text(text.to_string()),
            }
        })
        .metric(Metric::ExactMatch)
        .metric_fn("within_one", |targets: &[Value], predictions: &[Value]| {
            let close = targets
                .iter()
                .zip(predictions)
                .filter(|(t, p)| match (t, p) {
                    (Value::Float(t), Value::Float(p)) => (t - p).abs() <= 1.0,
                    _ => false,
                })
                .count();
            Ok(vec![(
                "within_one".into(),
                100.0 * close as f64 / targets.len().max(1) as f64,
            )])
        })
}

fn main() {
    let mut registry = Registry::builtin();
    registry.add_task(add_numbers()).expect("add_numbers");
    registry
        .add_mixture(
            Mixture::new("add_and_c4")
                .task("add_numbers", Rate::fixed(1.0))
                .task("c4_span_corruption", Rate::fixed(1.0)),
        )
        .expect("add_and_c4");
    t5mix::cli::main(registry)
}
