//! Encoding throughput of the T5 vocabulary on ≥ 50 MB of real text, 1 and
//! 2 threads, next to Python sentencepiece when `python3 -c "import
//! sentencepiece"` works.
//!
//!     cargo bench -p t5mix-pipeline --bench vocab_encode
//!
//! Text: the lines of the dolma crawl pages, STS-B and WMT samples
//! (../shared/data), repeated to `T5MIX_BENCH_MB` (default 52) MB.

use std::io::Read;
use std::time::Instant;

use rayon::prelude::*;
use t5mix_pipeline::shared_data::shared_or_skip;
use t5mix_pipeline::vocab::{EncodeScratch, Vocabulary};

fn main() {
    let (Some(model), Some(dolma), Some(wmt)) = (
        shared_or_skip("t5-spm/spiece.model", "vocab_encode"),
        shared_or_skip(
            "dolma-cc/CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz",
            "vocab_encode",
        ),
        shared_or_skip("wmt-ende-opennmt/src-train.txt", "vocab_encode"),
    ) else {
        return;
    };
    let vocab = Vocabulary::load(&model, 100).unwrap();
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&dolma).unwrap())
        .read_to_string(&mut raw)
        .unwrap();
    let mut base: Vec<String> = raw
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"]
                .as_str()
                .unwrap()
                .split('\n')
                .filter(|x| !x.trim().is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    base.extend(
        std::fs::read_to_string(&wmt)
            .unwrap()
            .lines()
            .map(str::to_string),
    );
    let target: usize = std::env::var("T5MIX_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(52)
        * 1_000_000;
    let mut lines: Vec<&str> = Vec::new();
    let mut bytes = 0;
    'outer: loop {
        for l in &base {
            lines.push(l);
            bytes += l.len();
            if bytes >= target {
                break 'outer;
            }
        }
    }
    let mb = bytes as f64 / 1e6;
    println!(
        "vocab_encode: {mb:.1} MB in {} lines (T5 vocabulary, 32100 ids)",
        lines.len()
    );
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let t = Instant::now();
        let tokens: usize = pool.install(|| {
            lines
                .par_chunks(4096)
                .map(|chunk| {
                    let mut s = EncodeScratch::default();
                    let mut out = Vec::new();
                    let mut n = 0;
                    for l in chunk {
                        out.clear();
                        vocab.encode_into(l, &mut s, &mut out);
                        n += out.len();
                    }
                    n
                })
                .sum()
        });
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  t5mix, {threads} thread(s): {:6.1} MB/s ({:5.1} MB/s per thread), {:5.2} M tokens/s",
            mb / secs,
            mb / secs / threads as f64,
            tokens as f64 / secs / 1e6
        );
    }
    // The same lines through Python sentencepiece, if it is installed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.txt");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let script = format!(
        "import sentencepiece as s, time\nsp=s.SentencePieceProcessor(model_file={model:?})\nL=open({path:?},encoding='utf-8').read().split('\\n')\nb=sum(len(x.encode()) for x in L)\nt=time.time();n=sum(len(x) for x in sp.encode(L))\nd=time.time()-t\nprint(f'  python sentencepiece {{s.__version__}}, 1 thread: {{b/1e6/d:6.1f}} MB/s, {{n/d/1e6:5.2f}} M tokens/s')\nt=time.time();n=sum(len(x) for x in sp.encode(L, num_threads=2))\nd=time.time()-t\nprint(f'  python sentencepiece, 2 threads: {{b/1e6/d:6.1f}} MB/s')\n",
        model = model.display().to_string(),
        path = path.display().to_string()
    );
    match std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
    {
        Ok(o) if o.status.success() => print!("{}", String::from_utf8_lossy(&o.stdout)),
        _ => println!("  (python sentencepiece not installed: no comparison)"),
    }
}
