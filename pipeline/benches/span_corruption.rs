//! Span corruption and packing throughput on real T5 token ids.
//!
//!     cargo bench -p t5mix-pipeline --bench span_corruption
//!
//! Token ids: every `ids` list of ../shared/data/t5-reference/spm_t5.jsonl
//! (seqio's encodings of STS-B sentences and crawl text with the real T5
//! vocabulary), repeated to `T5MIX_BENCH_TOKENS` tokens (default 60M).
//! Packing: the 203 real T5 supervised examples of glue_format.jsonl
//! (GLUE, WMT, CNN/DM, SQuAD; seqio's token ids), repeated to 200k examples.

use std::time::Instant;

use rayon::prelude::*;
use t5mix_pipeline::features::{
    packing_efficiency, EncDecExample, EncDecFeatureConverter, Packing,
};
use t5mix_pipeline::preprocessors::{Denoiser, ExampleKey, ExampleRng};
use t5mix_pipeline::shared_data::shared_or_skip;

fn load_ids(rel: &str, key: &str) -> Option<Vec<Vec<u32>>> {
    let p = shared_or_skip(rel, "span_corruption bench")?;
    let mut out = Vec::new();
    for line in std::fs::read_to_string(p).ok()?.lines() {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if let Some(a) = v.get(key).and_then(|x| x.as_array()) {
            out.push(a.iter().map(|x| x.as_u64().unwrap() as u32).collect());
        }
    }
    Some(out)
}

fn main() {
    let Some(docs) = load_ids("t5-reference/spm_t5.jsonl", "ids") else {
        return;
    };
    let target: usize = std::env::var("T5MIX_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000_000);
    let base: Vec<u32> = docs.concat();
    let mut stream = Vec::with_capacity(target);
    while stream.len() < target {
        stream.extend_from_slice(&base);
    }
    stream.truncate(target);
    let d = Denoiser::span_corruption(512, 114, 32100, 100).unwrap();
    let segs: Vec<&[u32]> = stream.chunks(d.tokens_length()).collect();
    println!(
        "span_corruption: {} real T5 token ids ({} distinct documents), {} segments of {}",
        stream.len(),
        docs.len(),
        segs.len(),
        d.tokens_length()
    );
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = Instant::now();
        let out_tokens: usize = pool.install(|| {
            segs.par_chunks(1024)
                .enumerate()
                .map(|(c, chunk)| {
                    let (mut i, mut tg) = (Vec::with_capacity(512), Vec::with_capacity(114));
                    let mut n = 0;
                    for (k, s) in chunk.iter().enumerate() {
                        let key = ExampleKey {
                            seed: 0,
                            task: "bench",
                            shard: 0,
                            index: (c * 1024 + k) as u64,
                        };
                        d.denoise(s, &mut ExampleRng::new(key, "denoise"), &mut i, &mut tg)
                            .unwrap();
                        n += i.len() + tg.len();
                    }
                    n
                })
                .sum()
        });
        let s = t.elapsed().as_secs_f64();
        let ex = segs.len() as f64 / s;
        println!(
            "  512/114, {threads} thread(s): {:>9.0} examples/s ({:>9.0} per core), {:6.1} M input tokens/s, {:6.1} M output tokens/s",
            ex,
            ex / threads as f64,
            stream.len() as f64 / s / 1e6,
            out_tokens as f64 / s / 1e6
        );
    }

    // Packing.
    let Some(inp) = load_ids("t5-reference/glue_format.jsonl", "inputs_ids") else {
        return;
    };
    let tgt = load_ids("t5-reference/glue_format.jsonl", "targets_ids").unwrap();
    let real: Vec<EncDecExample> = inp
        .into_iter()
        .zip(tgt)
        .map(|(i, t)| EncDecExample::new(i, t))
        .collect();
    let mut examples = Vec::with_capacity(200_000);
    let mut rng = ExampleRng::from_u64(5);
    while examples.len() < 200_000 {
        examples.push(real[rng.below(real.len() as u64) as usize].clone());
    }
    let (li, lt) = (512, 128);
    for packing in [Packing::None, Packing::Greedy, Packing::FirstFitDecreasing] {
        let conv = EncDecFeatureConverter::new(li, lt, packing).with_length_check(false);
        let t = Instant::now();
        let rows = conv.convert(&examples).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "  packing {packing:?} {li}/{lt}: {} examples -> {} rows, {:.0} rows/s, {:.0} examples/s, efficiency {:.1}% (1 thread)",
            examples.len(),
            rows.len(),
            rows.len() as f64 / s,
            examples.len() as f64 / s,
            100.0 * packing_efficiency(&rows, &examples, li, lt)
        );
    }
}
