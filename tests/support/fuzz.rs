//! Shared by the crates' fuzz tests (`#[path]`-included): a runner with a
//! fixed seed and a bounded number of cases, and inputs that are random
//! bytes or a valid file with a few random edits (bit flips, cuts,
//! insertions, a repeated tail).
#![allow(dead_code)]

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A runner with a fixed seed (`salt`): the same `cases` on every run.
pub fn runner(salt: u8, cases: u32) -> TestRunner {
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

/// Up to `random` random bytes, or `valid` with a few random edits.
pub fn inputs(valid: Vec<u8>, random: usize) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..6);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..random),
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
                    2 => v.insert(i, byte),
                    _ => {
                        let tail = v[i..].to_vec();
                        v.extend(tail);
                    }
                }
            }
            v
        }),
    ]
}
