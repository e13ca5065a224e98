//! Throughput of `t5mix clean` (the C4 page pipeline) on ≥ 50 MB of real crawl
//! text, on 1 and 2 threads.
//!
//!     cargo bench -p t5mix-pipeline --bench clean_throughput
//!
//! Input: the 697 dolma Common Crawl pages (../shared/data), replicated with
//! a distinct URL and a distinct first word on every line per copy, so that
//! neither URL nor line de-duplication can collapse the copies. Set
//! `T5MIX_BENCH_MB` to change the size (default 52), `T5MIX_BENCH_THREADS`
//! the thread counts (default `1,2`), `T5MIX_BENCH_REPEAT` the runs per
//! figure (default 3; median and best are printed) and `T5MIX_BENCH_ONLY`
//! a configuration name prefix (`rules`, `full`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use t5mix_pipeline::clean::{
    run_clean, BadWords, CleanConfig, CleanOptions, LanguageFilter, NoProgress, OutputFormat,
    PageCleaner, RuleCounters,
};
use t5mix_pipeline::readers::{read_file, Document, ReadOptions};
use t5mix_pipeline::shared_data::shared_or_skip;

fn make_corpus(dir: &Path, target_mb: usize) -> Option<(Vec<std::path::PathBuf>, u64)> {
    let dolma = shared_or_skip(
        "dolma-cc/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz",
        "clean_throughput",
    )?;
    let mut pages: Vec<Document> = Vec::new();
    read_file(
        &dolma,
        &ReadOptions {
            url_field: "metadata.warc_url".into(),
            timestamp_field: "created".into(),
            ..Default::default()
        },
        &mut |d| {
            pages.push(d);
            Ok(())
        },
    )
    .ok()?;
    let per_copy: usize = pages.iter().map(|p| p.text.len()).sum();
    let copies = (target_mb * 1_000_000).div_ceil(per_copy);
    let mut files = Vec::new();
    let mut total = 0u64;
    // Four files, so that file-level parallelism has something to do too.
    for f in 0..4 {
        let path = dir.join(format!("crawl-{f}.jsonl"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for c in (f..copies).step_by(4) {
            for p in &pages {
                let text: String = p
                    .text
                    .split('\n')
                    .map(|l| format!("Copy{c} {l}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                total += text.len() as u64;
                let v = serde_json::json!({"text": text, "url": format!("{}#copy{c}", p.url), "timestamp": p.timestamp});
                serde_json::to_writer(&mut w, &v).unwrap();
                w.write_all(b"\n").unwrap();
            }
        }
        files.push(path);
    }
    Some((files, total))
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let target_mb: usize = std::env::var("T5MIX_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(52);
    let dir = tempfile::tempdir().unwrap();
    let Some((files, bytes)) = make_corpus(dir.path(), target_mb) else {
        return;
    };
    let mb = bytes as f64 / 1e6;
    println!(
        "clean_throughput: {mb:.1} MB of page text in {} files",
        files.len()
    );
    let badwords = shared_or_skip("ldnoobw/en.txt", "clean_throughput (bad words)")
        .map(|p| BadWords::load(&p, "en").unwrap());

    let configs: Vec<(&str, CleanConfig, bool)> = vec![
        (
            "rules+dedup",
            {
                let mut c = CleanConfig::default();
                c.language.clear();
                c
            },
            false,
        ),
        (
            "full c4/en (rules+dedup+langid+badwords)",
            CleanConfig::default(),
            true,
        ),
    ];
    let only = std::env::var("T5MIX_BENCH_ONLY").unwrap_or_default();
    let repeat: usize = std::env::var("T5MIX_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    for (name, cfg, with_bad) in configs {
        if !name.starts_with(only.as_str()) {
            continue;
        }
        let thread_counts: Vec<usize> = match std::env::var("T5MIX_BENCH_THREADS") {
            Ok(v) => v.split(',').filter_map(|x| x.parse().ok()).collect(),
            Err(_) => vec![1, 2],
        };
        for &threads in &thread_counts {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let out = dir.path().join(format!("out-{threads}-{}", with_bad as u8));
            let mut opts = CleanOptions::new(&out);
            opts.config = cfg.clone();
            opts.badwords = if with_bad { badwords.clone() } else { None };
            opts.output_format = OutputFormat::Parquet;
            // This machine is shared: every figure is the median and the best
            // of `T5MIX_BENCH_REPEAT` runs (default 3).
            let mut rates = Vec::new();
            let mut cpu = Vec::new();
            let mut last = None;
            for _ in 0..repeat {
                std::fs::remove_dir_all(&out).ok();
                let t = Instant::now();
                let c = cpu_seconds();
                let stats = pool
                    .install(|| run_clean(&files, &opts, &NoProgress))
                    .unwrap();
                rates.push(mb / t.elapsed().as_secs_f64());
                cpu.push(cpu_seconds() - c);
                last = Some(stats);
            }
            cpu.sort_by(f64::total_cmp);
            rates.sort_by(f64::total_cmp);
            let (median, best) = (rates[rates.len() / 2], rates[rates.len() - 1]);
            let stats = last.expect("one run");
            println!(
                "  {name:<42} {threads} thread(s): median {median:6.1} MB/s ({:5.1} per core), best {best:6.1} ({:5.1} per core); CPU {:.3} s per run = {:.1} MB per CPU-second; {} pages in, {} out, last run's stages {:?}",
                median / threads as f64,
                best / threads as f64,
                cpu[cpu.len() / 2],
                mb / cpu[cpu.len() / 2],
                stats.pages_in,
                stats.pages_out,
                stats
                    .seconds
                    .iter()
                    .map(|(k, v)| format!("{k}={v:.2}s"))
                    .collect::<Vec<_>>()
            );
            std::fs::remove_dir_all(&out).ok();
        }
    }

    if std::env::var_os("T5MIX_BENCH_ONLY").is_some() {
        return;
    }
    // Components on one thread: clean_page alone, language ID alone.
    let mut texts = Vec::new();
    read_file(&files[0], &ReadOptions::default(), &mut |d| {
        texts.push(d.text);
        Ok(())
    })
    .unwrap();
    let in_mb = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let cleaner = PageCleaner::new(CleanConfig::default());
    let t = Instant::now();
    let mut counters = RuleCounters::default();
    let mut kept = Vec::new();
    for t in &texts {
        if let t5mix_pipeline::clean::Cleaned::Kept { text, .. } =
            cleaner.clean_page(t, &mut counters, None)
        {
            kept.push(text);
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "  clean_page alone, 1 thread: {:.1} MB/s of raw text",
        in_mb / s
    );
    let kept_mb = kept.iter().map(|t| t.len()).sum::<usize>() as f64 / 1e6;
    let f = LanguageFilter::new("en", 0.99, 0).unwrap();
    let t = Instant::now();
    let n = kept.iter().filter(|t| f.keep(t)).count();
    let s = t.elapsed().as_secs_f64();
    println!(
        "  language ID alone (whatlang), 1 thread: {:.1} MB/s of cleaned text ({n} of {} pages English)",
        kept_mb / s,
        kept.len()
    );
    if let Some(b) = &badwords {
        let t = Instant::now();
        let n = kept.iter().filter(|t| b.matches(t)).count();
        let s = t.elapsed().as_secs_f64();
        println!(
            "  bad words alone, 1 thread: {:.1} MB/s of cleaned text ({n} pages match)",
            kept_mb / s
        );
    }
}
