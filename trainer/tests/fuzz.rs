//! Fuzzing the checkpoint readers with generated inputs (random bytes and
//! random edits of a valid file, a fixed seed, a bounded number of cases):
//! safetensors and a model folder's config give a value or an error, never
//! a panic, an abort on allocation or a hang.

use t5mix_trainer::weights::{decode_safetensors, encode_safetensors, load_model};
use t5mix_trainer::{Dev, T5Config, T5};

#[path = "../../tests/support/fuzz.rs"]
mod support;
use support::{inputs, runner};

#[test]
fn safetensors_never_panic() {
    let tensors = vec![
        (
            "a.weight".to_string(),
            vec![3, 4],
            (0..12).map(|x| x as f32).collect(),
        ),
        ("b".to_string(), vec![5], vec![0.5; 5]),
    ];
    let valid = encode_safetensors(&tensors, None).unwrap();
    let path = std::path::Path::new("fuzz.safetensors");
    runner(21, 500)
        .run(&inputs(valid, 400), |bytes| {
            let _ = decode_safetensors(&bytes, path);
            Ok(())
        })
        .unwrap();
}

#[test]
fn model_configs_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = T5Config::named("micro").unwrap();
    cfg.vocab_size = 64;
    cfg.d_model = 8;
    cfg.d_kv = 4;
    cfg.d_ff = 16;
    cfg.num_heads = 2;
    let dev = Dev::default();
    let m = T5::new(cfg, &dev, Some(0));
    t5mix_trainer::weights::save_model(&m, dir.path()).unwrap();
    let valid = std::fs::read(dir.path().join("config.json")).unwrap();
    // sizes that would abort on allocation are refused before any is made
    let v: serde_json::Value = serde_json::from_slice(&valid).unwrap();
    for (k, n) in [
        ("d_ff", 4_000_000u64),
        ("d_model", 1 << 30),
        ("num_layers", 100_000),
    ] {
        let mut big = v.clone();
        big[k] = n.into();
        std::fs::write(dir.path().join("config.json"), big.to_string()).unwrap();
        let e = load_model(dir.path(), &dev)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("parameters") || e.contains("must be in") || e.contains("4096"),
            "{k}: {e}"
        );
    }
    runner(22, 150)
        .run(&inputs(valid, 400), |bytes| {
            std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
            let _ = load_model(dir.path(), &dev);
            Ok(())
        })
        .unwrap();
}
