//! End-to-end `build` of the C4 span-corruption task from clean text shards
//! through the task's front door (`Task::build_cache`):
//! read Parquet, tokenize with the T5 vocabulary, span-corrupt at 512/114,
//! write example shards. MB/s of text in, examples/s out, on 1 and 2 threads.
//!
//!     cargo bench -p t5mix-tasks --bench build_span_corruption
//!
//! Input: the dolma crawl pages (../shared/data), repeated into 8 clean shards
//! of `T5MIX_BENCH_MB` (default 48) MB in all.

use std::io::Read;
use std::time::Instant;

use t5mix_pipeline::clean::output::{CleanPage, OutputFormat, ShardWriter};
use t5mix_pipeline::shared_data::shared_or_skip;
use t5mix_pipeline::vocab::Vocabulary;
use t5mix_tasks::{BuildOptions, TaskRegistry};

fn main() {
    let (Some(model), Some(dolma)) = (
        shared_or_skip("t5-spm/spiece.model", "build_span_corruption"),
        shared_or_skip(
            "dolma-cc/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz",
            "build_span_corruption",
        ),
    ) else {
        return;
    };
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&dolma).unwrap())
        .read_to_string(&mut raw)
        .unwrap();
    let texts: Vec<String> = raw
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let target: usize = std::env::var("T5MIX_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
        * 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    let per_shard = target / 8;
    let mut w = ShardWriter::new(&clean, OutputFormat::Parquet, usize::MAX, vec![]).unwrap();
    let (mut bytes, mut shard_bytes, mut n) = (0usize, 0usize, 0usize);
    let mut shards = Vec::new();
    'outer: loop {
        for t in &texts {
            w.push(CleanPage {
                text: t.clone(),
                url: format!("u{n}"),
                timestamp: String::new(),
                split: "train".into(),
            })
            .unwrap();
            n += 1;
            bytes += t.len();
            shard_bytes += t.len();
            if shard_bytes >= per_shard {
                for p in w.finish().unwrap().0 {
                    let q = clean.join(format!("shard-{:02}.parquet", shards.len()));
                    std::fs::rename(&p, &q).unwrap();
                    shards.push(q);
                }
                shard_bytes = 0;
                if bytes >= target {
                    break 'outer;
                }
                w = ShardWriter::new(&clean, OutputFormat::Parquet, usize::MAX, vec![]).unwrap();
            }
        }
    }
    let vocab = Vocabulary::load(&model, 100).unwrap();
    let registry = TaskRegistry::builtin();
    let task = registry.task("c4_span_corruption").unwrap();
    let inputs = [clean.display().to_string()];
    let mb = bytes as f64 / 1e6;
    println!(
        "build_span_corruption: {mb:.1} MB of clean text in {} shards",
        shards.len()
    );
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let out = dir.path().join(format!("out{threads}"));
        let mut options = BuildOptions::new(&vocab);
        options.allow_partial = true; // shards written here, without a clean manifest
        let t = Instant::now();
        // One worker per thread-sized slice of shards runs in parallel too.
        let report = pool
            .install(|| task.build_cache(&inputs, &out, &options, |_, _| {}))
            .unwrap()
            .report;
        let s = t.elapsed().as_secs_f64();
        println!(
            "  {threads} thread(s): {:6.1} MB/s of text in, {:8.0} examples/s out ({} examples of 512/114)",
            mb / s,
            report.stats.examples as f64 / s,
            report.stats.examples
        );
    }
}
