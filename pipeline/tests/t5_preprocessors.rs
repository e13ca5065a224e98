//! Span corruption, sentinels and feature conversion against the outputs of
//! the real t5.data / seqio code (../shared/data/t5-reference).

use serde_json::Value;
use t5mix_pipeline::features::{EncDecExample, EncDecFeatureConverter, EncDecRow, Packing};
use t5mix_pipeline::preprocessors::{
    append_eos_after_trim, noise_span_to_unique_sentinel, nonnoise_span_to_unique_sentinel,
    random_spans_helper, random_spans_noise_mask, Denoiser, ExampleKey, ExampleRng,
};
use t5mix_pipeline::shared_data::{json_ids, shared_file, shared_jsonl};

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn random_spans_helper_matches_t5() {
    let p = shared_file("t5-reference/random_spans_helper.json");
    let d: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    let rows = d["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 165);
    for r in rows {
        let got = random_spans_helper(
            r["inputs_length"].as_u64().unwrap() as usize,
            r["noise_density"].as_f64().unwrap(),
            r["mean_noise_span_length"].as_f64().unwrap(),
            r["extra_tokens_per_span_inputs"].as_u64().unwrap() as usize,
            r["extra_tokens_per_span_targets"].as_u64().unwrap() as usize,
        )
        .unwrap();
        let want = (
            r["tokens_length"].as_u64().unwrap() as usize,
            r["targets_length"].as_u64().unwrap() as usize,
        );
        assert_eq!(got, want, "{r}");
    }
}

struct Structure {
    noise: usize,
    nonnoise: usize,
    noise_spans: usize,
    nonnoise_spans: usize,
    first_is_nonnoise: bool,
    last_is_noise: bool,
}

fn structure(mask: &[bool]) -> Structure {
    let runs = |want: bool| {
        let mut n = 0;
        let mut prev = !want;
        for &m in mask {
            if m == want && prev != want {
                n += 1;
            }
            prev = m;
        }
        n
    };
    Structure {
        noise: mask.iter().filter(|&&m| m).count(),
        nonnoise: mask.iter().filter(|&&m| !m).count(),
        noise_spans: runs(true),
        nonnoise_spans: runs(false),
        first_is_nonnoise: mask.first() == Some(&false),
        last_is_noise: mask.last() == Some(&true),
    }
}

/// TF's stateless RNG cannot be reproduced, so the contract is the counts and
/// the structure of every mask (t5-reference README).
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn noise_mask_counts_and_structure_match_t5() {
    let rows = shared_jsonl("t5-reference/noise_mask_structure.jsonl");
    assert_eq!(rows.len(), 402);
    for r in &rows {
        let len = r["length"].as_u64().unwrap() as usize;
        let d = r["noise_density"].as_f64().unwrap();
        let mu = r["mean_noise_span_length"].as_f64().unwrap();
        assert_eq!(r["structure_same_for_all_seeds"], true);
        for seed in 0..5 {
            let key = ExampleKey {
                seed,
                task: "mask-test",
                shard: 0,
                index: len as u64,
            };
            let mask =
                random_spans_noise_mask(len, d, mu, false, &mut ExampleRng::new(key, "mask"));
            assert_eq!(mask.len(), len);
            let s = structure(&mask);
            let ctx = format!("length {len}, density {d}, seed {seed}");
            assert_eq!(
                s.noise as u64,
                r["num_noise_tokens"].as_u64().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                s.nonnoise as u64,
                r["num_nonnoise_tokens"].as_u64().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                s.noise_spans as u64,
                r["num_noise_spans"].as_u64().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                s.nonnoise_spans as u64,
                r["num_nonnoise_spans"].as_u64().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                s.first_is_nonnoise,
                r["first_is_nonnoise"].as_bool().unwrap(),
                "{ctx}"
            );
            assert_eq!(
                s.last_is_noise,
                r["last_is_noise"].as_bool().unwrap(),
                "{ctx}"
            );
        }
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn sentinel_transforms_and_eos_match_t5() {
    let rows = shared_jsonl("t5-reference/sentinel_transform.jsonl");
    assert_eq!(rows.len(), 51);
    for r in &rows {
        let toks = json_ids(&r["tokens"]);
        let mask: Vec<bool> = r["mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_u64() == Some(1))
            .collect();
        let vocab = r["vocab_size"].as_u64().unwrap() as u32;
        let (mut inp, mut tgt) = (Vec::new(), Vec::new());
        let guarded = noise_span_to_unique_sentinel(&toks, &mask, vocab, 100, &mut Vec::new()).and(
            nonnoise_span_to_unique_sentinel(&toks, &mask, vocab, 100, &mut Vec::new()),
        );
        let want_in = json_ids(&r["noise_span_to_unique_sentinel"]);
        let want_tgt = json_ids(&r["nonnoise_span_to_unique_sentinel"]);
        let s = structure(&mask);
        let t5_overflows = s.noise_spans > 100 || s.nonnoise_spans > 100;
        // T5 does not guard: with more than 100 spans its "sentinels" run into
        // ordinary ids. Ours refuses; unguarded, it gives T5's ids.
        assert_eq!(guarded.is_err(), t5_overflows, "{}", r["name"]);
        noise_span_to_unique_sentinel(&toks, &mask, vocab, vocab, &mut inp).unwrap();
        nonnoise_span_to_unique_sentinel(&toks, &mask, vocab, vocab, &mut tgt).unwrap();
        assert_eq!(inp, want_in, "{}", r["name"]);
        assert_eq!(tgt, want_tgt, "{}", r["name"]);
        // sequence_length None: no trimming, only EOS.
        let len = |k: &str| {
            r["sequence_length"][k]
                .as_u64()
                .map_or(usize::MAX, |v| v as usize)
        };
        append_eos_after_trim(&mut inp, len("inputs"), 1);
        append_eos_after_trim(&mut tgt, len("targets"), 1);
        assert_eq!(
            inp,
            json_ids(&r["append_eos_after_trim"]["inputs"]),
            "{}",
            r["name"]
        );
        assert_eq!(
            tgt,
            json_ids(&r["append_eos_after_trim"]["targets"]),
            "{}",
            r["name"]
        );
    }
}

fn row_json(r: &EncDecRow) -> Value {
    let mut v = serde_json::to_value(r).unwrap();
    v.as_object_mut().unwrap().retain(|_, x| !x.is_null());
    v
}

/// Every feature-converter case equals seqio's output, except where seqio's
/// own packing is wrong (its README): a 0 inside a packed sequence (seqio
/// counts non-zero tokens, so it cuts the example short and leaves a hole in
/// the segment ids) and an empty `inputs` (seqio numbers the next example's
/// encoder segment 1 instead of 2). There ours follows the lengths; the test
/// spells out our rows.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn feature_converter_matches_seqio() {
    let rows = shared_jsonl("t5-reference/feature_converter.jsonl");
    let mut compared = 0;
    for r in &rows {
        let name = r["name"].as_str().unwrap();
        let pack = r["pack"].as_bool().unwrap();
        let lens = &r["task_feature_lengths"];
        let conv = EncDecFeatureConverter::new(
            lens["inputs"].as_u64().unwrap() as usize,
            lens["targets"].as_u64().unwrap() as usize,
            if pack { Packing::Greedy } else { Packing::None },
        )
        .with_length_check(r["apply_length_check"].as_bool().unwrap());
        let examples: Vec<EncDecExample> = r["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| EncDecExample::new(json_ids(&e["inputs"]), json_ids(&e["targets"])))
            .collect();
        let got = conv.convert(&examples);
        if r.get("error").is_some() {
            let err = got.expect_err(name).to_string();
            assert!(
                err.contains("'inputs'") && err.contains("16") && err.contains("10"),
                "{err}"
            );
            continue;
        }
        let got: Vec<Value> = got.unwrap().iter().map(row_json).collect();
        let want: Vec<Value> = r["outputs"].as_array().unwrap().clone();
        match (name, pack) {
            ("zero_token_inside_sequence", true) => {
                let v = &got[0];
                assert_eq!(
                    v["encoder_input_tokens"],
                    serde_json::json!([5, 0, 7, 1, 8, 9, 1, 0, 0, 0])
                );
                assert_eq!(
                    v["encoder_segment_ids"],
                    serde_json::json!([1, 1, 1, 1, 2, 2, 2, 0, 0, 0])
                );
                assert_eq!(
                    v["decoder_target_tokens"],
                    serde_json::json!([3, 0, 1, 4, 1, 0, 0])
                );
                assert_eq!(
                    v["decoder_input_tokens"],
                    serde_json::json!([0, 3, 0, 0, 4, 0, 0])
                );
                assert_eq!(
                    v["decoder_loss_weights"],
                    serde_json::json!([1, 1, 1, 1, 1, 0, 0])
                );
                assert_ne!(got, want, "seqio drops the EOS after the 0 here");
            }
            ("zero_token_inside_sequence", false) => {
                assert_eq!(
                    got[0]["decoder_loss_weights"],
                    serde_json::json!([1, 1, 1, 0, 0, 0, 0])
                );
                assert_eq!(
                    want[0]["decoder_loss_weights"],
                    serde_json::json!([1, 0, 1, 0, 0, 0, 0])
                );
                let mut g = got.clone();
                g[0]["decoder_loss_weights"] = want[0]["decoder_loss_weights"].clone();
                assert_eq!(g, want, "all but the loss weight of the 0 token agree");
            }
            ("empty_inputs", true) => {
                assert_eq!(
                    got[0]["encoder_segment_ids"],
                    serde_json::json!([2, 2, 0, 0, 0, 0, 0, 0, 0, 0])
                );
                assert_eq!(
                    want[0]["encoder_segment_ids"],
                    serde_json::json!([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
                );
                let mut g = got.clone();
                g[0]["encoder_segment_ids"] = want[0]["encoder_segment_ids"].clone();
                assert_eq!(g, want, "all but seqio's misnumbered segment agree");
            }
            _ => {
                assert_eq!(got, want, "{name} pack={pack}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 19);
}

/// ln C(n, k)
fn ln_choose(n: usize, k: usize) -> f64 {
    fn ln_fact(n: usize) -> f64 {
        (1..=n).map(|i| (i as f64).ln()).sum()
    }
    ln_fact(n) - ln_fact(k) - ln_fact(n - k)
}

/// Chi-square statistic of `counts` (index = span length) against `p`,
/// bins merged from the tail until every expected count is at least 5.
fn chi_square(
    counts: &[u64],
    p: &dyn Fn(usize) -> f64,
    max_len: usize,
    draws: u64,
) -> (f64, usize) {
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let (mut o, mut e) = (0.0, 0.0);
    for l in 1..=max_len {
        o += counts.get(l).copied().unwrap_or(0) as f64;
        e += p(l) * draws as f64;
        if e >= 5.0 {
            bins.push((o, e));
            o = 0.0;
            e = 0.0;
        }
    }
    if let Some(last) = bins.last_mut() {
        last.0 += o;
        last.1 += e;
    }
    let chi: f64 = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    (chi, bins.len() - 1)
}

/// Critical value of chi-square at alpha = 0.001 (Wilson–Hilferty).
fn chi_critical(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.0902;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Span lengths are uniformly random compositions: the first noise
/// span of `n` noise tokens in `k` spans has length `l` with probability
/// C(n-l-1, k-2) / C(n-1, k-1); likewise the first non-noise span.
#[test]
fn span_lengths_follow_the_composition_law() {
    let (len, draws) = (100usize, 20_000u64);
    let (n_noise, k) = (15usize, 5usize);
    let n_nonnoise = len - n_noise;
    let mut first_noise = vec![0u64; len + 1];
    let mut first_nonnoise = vec![0u64; len + 1];
    for i in 0..draws {
        let key = ExampleKey {
            seed: 1,
            task: "chi2",
            shard: 0,
            index: i,
        };
        let mask =
            random_spans_noise_mask(len, 0.15, 3.0, false, &mut ExampleRng::new(key, "mask"));
        let lead = mask.iter().take_while(|&&m| !m).count();
        let noise = mask[lead..].iter().take_while(|&&m| m).count();
        first_nonnoise[lead] += 1;
        first_noise[noise] += 1;
    }
    let law = |n: usize| {
        move |l: usize| {
            if l > n - k + 1 {
                0.0
            } else {
                (ln_choose(n - l - 1, k - 2) - ln_choose(n - 1, k - 1)).exp()
            }
        }
    };
    for (name, counts, n) in [
        ("noise", &first_noise, n_noise),
        ("non-noise", &first_nonnoise, n_nonnoise),
    ] {
        let p = law(n);
        let (chi, df) = chi_square(counts, &p, n, draws);
        let crit = chi_critical(df);
        eprintln!("{name}: chi2 {chi:.1} on {df} df (critical {crit:.1} at 0.001)");
        assert!(chi < crit, "{name} span lengths: chi2 {chi} >= {crit}");
        // The test has power: a uniform law over the same support fails.
        let uniform = |l: usize| {
            if l <= n - k + 1 {
                1.0 / (n - k + 1) as f64
            } else {
                0.0
            }
        };
        let (chi_u, df_u) = chi_square(counts, &uniform, n, draws);
        assert!(
            chi_u > chi_critical(df_u),
            "{name}: a wrong law must be rejected"
        );
    }
}

#[test]
fn span_corruption_is_deterministic_per_example() {
    let d = Denoiser::span_corruption(512, 114, 32100, 100).unwrap();
    let seg: Vec<u32> = (0..568).map(|i| 3 + i % 31000).collect();
    let run = |index| {
        let key = ExampleKey {
            seed: 42,
            task: "c4_span_corruption",
            shard: 2,
            index,
        };
        let (mut i, mut t) = (Vec::new(), Vec::new());
        d.denoise(&seg, &mut ExampleRng::new(key, "denoise"), &mut i, &mut t)
            .unwrap();
        (i, t)
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    let (i, t) = run(5);
    assert_eq!((i.len(), t.len()), (512, 114));
    // 85 noise tokens in 28 spans: 483 + 28 + 1 inputs, 85 + 28 + 1 targets.
    assert_eq!(i.iter().filter(|&&x| x >= 32000).count(), 28);
    assert_eq!(t.iter().filter(|&&x| x >= 32000).count(), 28);
}

#[test]
fn shard_corruption_is_independent_of_threads() {
    use t5mix_pipeline::preprocessors::ShardCorruptor;
    let d = Denoiser::span_corruption(128, 29, 32100, 100).unwrap();
    let docs: Vec<Vec<u32>> = (0..300u32)
        .map(|i| {
            (0..(i * 7 % 400))
                .map(|t| 3 + (t * 31 + i) % 32000)
                .collect()
        })
        .collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = Vec::new();
            let mut c = ShardCorruptor::new(&d, 7, "c4_span_corruption", 3);
            c.docs_per_group = 16;
            let n = c
                .run(docs.iter().map(|v| v.as_slice()), |i, t| {
                    out.push((i.to_vec(), t.to_vec()))
                })
                .unwrap();
            assert_eq!(n as usize, out.len());
            out
        })
    };
    let a = run(1);
    assert_eq!(a, run(2));
    assert!(a.len() > 300);
    // Every example: inputs ≤ 128 and targets ≤ 29, both ending in EOS.
    assert!(a.iter().all(|(i, t)| i.len() <= 128
        && t.len() <= 29
        && i.last() == Some(&1)
        && t.last() == Some(&1)));
    // Full segments give exactly 128 / 29.
    assert!(
        a.iter()
            .filter(|(i, t)| i.len() == 128 && t.len() == 29)
            .count()
            > a.len() / 2
    );
}

#[test]
fn random_roll_rotates_the_mask() {
    use t5mix_pipeline::preprocessors::noise_span_counts;
    for seed in 0..20u64 {
        let mask = random_spans_noise_mask(100, 0.15, 3.0, true, &mut ExampleRng::from_u64(seed));
        assert_eq!(mask.len(), 100);
        assert_eq!(
            mask.iter().filter(|&&m| m).count(),
            noise_span_counts(100, 0.15, 3.0).0
        );
    }
    // Some rolled masks start with noise, which an unrolled mask never does.
    let starts_noise = (0..50u64)
        .filter(|&s| random_spans_noise_mask(100, 0.15, 3.0, true, &mut ExampleRng::from_u64(s))[0])
        .count();
    assert!(starts_noise > 0);
}

#[test]
fn other_token_functions() {
    use t5mix_pipeline::preprocessors::*;
    let toks: Vec<u32> = (100..108).collect();
    let mask = [false, false, true, true, false, false, false, true];
    let run = |f: &dyn Fn(&mut Vec<u32>)| {
        let mut v = Vec::new();
        f(&mut v);
        v
    };
    assert_eq!(
        run(&|o| noise_token_to_sentinel(&toks, &mask, 32100, o)),
        vec![100, 101, 32099, 32099, 104, 105, 106, 32099]
    );
    assert_eq!(
        run(&|o| noise_span_to_sentinel(&toks, &mask, 32100, o)),
        vec![100, 101, 32099, 104, 105, 106, 32099]
    );
    assert_eq!(
        run(&|o| drop_noise_tokens(&toks, &mask, o)),
        vec![100, 101, 104, 105, 106]
    );
    assert_eq!(
        run(&|o| drop_nonnoise_tokens(&toks, &mask, o)),
        vec![102, 103, 107]
    );
    let mut r = ExampleRng::from_u64(3);
    let mut permuted = Vec::new();
    permute_noise_tokens(&toks, &mask, &mut r, &mut permuted);
    assert_eq!(
        permuted
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| !m)
            .map(|(&t, _)| t)
            .collect::<Vec<_>>(),
        vec![100, 101, 104, 105, 106]
    );
    let mut noise: Vec<u32> = permuted
        .iter()
        .zip(&mask)
        .filter(|(_, &m)| m)
        .map(|(&t, _)| t)
        .collect();
    noise.sort();
    assert_eq!(noise, vec![102, 103, 107]);
    let mut random = Vec::new();
    noise_token_to_random_token(&toks, &mask, 32100, 3, &mut r, &mut random);
    for (i, (&t, &m)) in random.iter().zip(&mask).enumerate() {
        if m {
            assert!((3..32100).contains(&t));
        } else {
            assert_eq!(t, toks[i]);
        }
    }
    // random_prob 0: always the sentinel; 1: never.
    let mut o = Vec::new();
    noise_token_to_random_token_or_sentinel(&toks, &mask, 32100, 3, 0.0, &mut r, &mut o);
    assert_eq!(o, run(&|o| noise_token_to_sentinel(&toks, &mask, 32100, o)));
    let mut o = Vec::new();
    noise_token_to_random_token_or_sentinel(&toks, &mask, 32100, 3, 1.0, &mut r, &mut o);
    assert!(o
        .iter()
        .zip(&mask)
        .all(|(&t, &m)| !m || (3..32100).contains(&t)));
    assert_ne!(o, run(&|o| noise_token_to_sentinel(&toks, &mask, 32100, o)));
    // iid masks hit the density on average.
    let mut r = ExampleRng::from_u64(4);
    let n: usize = (0..200)
        .map(|_| {
            iid_noise_mask(100, 0.15, &mut r)
                .iter()
                .filter(|&&m| m)
                .count()
        })
        .sum();
    assert!((2600..3400).contains(&n), "{n}");
    // A prefix mask: non-noise then noise, both non-empty.
    for s in 0..20 {
        let m = random_prefix_noise_mask(50, 0.5, &mut ExampleRng::from_u64(s));
        let k = m.iter().take_while(|&&x| !x).count();
        assert!((1..50).contains(&k) && m[k..].iter().all(|&x| x));
    }
}
