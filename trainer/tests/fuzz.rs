//! Fuzzing the checkpoint readers with generated inputs (random bytes and
//! random edits of a valid file, a fixed seed, a bounded number of cases):
//! safetensors and a model folder's config give a value or an error, never
//! a panic, an abort on allocation or a hang.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use t5mix_trainer::weights::{decode_safetensors, encode_safetensors, load_model};
use t5mix_trainer::{Dev, T5Config, T5};

fn runner(salt: u8, cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[salt; 32]),
    )
}

/// Random bytes, or `valid` with a few random edits.
fn inputs(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        edits.prop_map(move |edits| {
            let mut v = valid.clone();
            for (at, op, byte) in edits {
                if v.is_empty() {
                    v.push(byte);
                    continue;
                }
                let i = at.index(v.len());
                match op {
                    0 => v[i] ^= 1 << (byte % 8),
                    1 => v.truncate(i),
                    _ => v.insert(i, byte),
                }
            }
            v
        }),
    ]
}

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
        .run(&inputs(valid), |bytes| {
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
        .run(&inputs(valid), |bytes| {
            std::fs::write(dir.path().join("config.json"), &bytes).unwrap();
            let _ = load_model(dir.path(), &dev);
            Ok(())
        })
        .unwrap();
}
