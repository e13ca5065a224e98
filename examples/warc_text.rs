//! The text `t5mix clean` reads from WARC (or WET, JSONL, …) files before
//! the C4 rules, one JSON line per page: `{"url", "text"}`, then the pages
//! per second on stderr. Used by scripts/bench-warc-extract.py.
//!
//!     cargo run --release --example warc_text -- main FILE.warc.gz... > pages.jsonl
//!
//! With `--html PAGES.jsonl` (lines `{"url", "html"}`: decoded HTML, as the
//! Python extractors get it) it times the extraction alone, HTML in, text
//! out, and prints nothing else.

use t5mix_pipeline::readers::html::Extractor;
use t5mix_pipeline::readers::{read_file, ReadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let extractor: Extractor = args
        .next()
        .ok_or("usage: warc_text main|plain FILE...")?
        .parse()?;
    let files: Vec<String> = args.collect();
    if files.first().map(String::as_str) == Some("--html") {
        return time_html(extractor, &files[1..]);
    }
    let args = files.into_iter();
    let opts = ReadOptions {
        extractor,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let (mut pages, mut bytes) = (0u64, 0u64);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for file in args {
        let report = read_file(file.as_ref(), &opts, &mut |d| {
            use std::io::Write;
            pages += 1;
            serde_json::to_writer(&mut out, &serde_json::json!({"url": d.url, "text": d.text}))
                .map_err(|e| t5mix_pipeline::PipelineError::Config {
                    what: "stdout".into(),
                    message: e.to_string(),
                })?;
            writeln!(out).map_err(|e| t5mix_pipeline::PipelineError::io("stdout".as_ref(), e))
        })?;
        bytes += report.file_bytes;
    }
    eprintln!(
        "{pages} pages in {:.3} s ({:.1} pages/s, {:.1} MB/s of WARC)",
        t.elapsed().as_secs_f64(),
        pages as f64 / t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The seconds `html_to_text` takes over the pages of JSONL files.
fn time_html(extractor: Extractor, files: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let mut pages = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(f)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            pages.push(v["html"].as_str().unwrap_or_default().to_string());
        }
    }
    let t = std::time::Instant::now();
    let chars: usize = pages
        .iter()
        .map(|h| t5mix_pipeline::readers::html::html_to_text(h, extractor).len())
        .sum();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} pages in {secs:.3} s ({:.1} pages/s; {chars} bytes of text)",
        pages.len(),
        pages.len() as f64 / secs
    );
    Ok(())
}
