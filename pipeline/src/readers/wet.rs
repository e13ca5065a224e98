//! Common Crawl WET files, parsed exactly as tfds `c4_utils.split_wet_file`.
//!
//! tfds reads the file line by line (universal newlines), strips each line,
//! skips empty ones, starts a page at each `WARC/1.0` line, takes the URL from
//! `WARC-Target-URI:` and the timestamp from `WARC-Date:`, leaves out every
//! line that starts with `WARC`, `CONTENT-` or `Content-`, and joins the
//! rest with `\n`. A page without URL, text or timestamp is skipped.
//!
//! One addition: WARC records of other types than `conversion` and
//! `warcinfo` (`request`, `response`, `metadata`, … as in a full WARC file)
//! hold HTTP headers and raw HTML, not extracted text, so they are skipped
//! and counted instead of being read as text.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;

use super::{classify_io, Document, FileReport, Opened, ReadOptions};
use crate::clean::rules::py_strip;
use crate::error::Result;

/// Pages `split_wet_file` skips, and records of other types.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WetCounters {
    /// Records without `WARC-Target-URI` (e.g. `warcinfo`).
    pub no_url: u64,
    /// Records without text.
    pub no_content: u64,
    /// Records without `WARC-Date`.
    pub no_timestamp: u64,
    /// Records of a type other than `conversion`/`warcinfo`.
    pub other_record_type: u64,
}

impl WetCounters {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &WetCounters) {
        self.no_url += o.no_url;
        self.no_content += o.no_content;
        self.no_timestamp += o.no_timestamp;
        self.other_record_type += o.other_record_type;
    }
}

#[derive(Default)]
struct Page {
    url: String,
    timestamp: String,
    text: String,
    warc_type: String,
    start: u64,
    bad_utf8: bool,
}

pub(super) fn read(
    path: &Path,
    mut opened: Opened,
    opts: &ReadOptions,
    report: &mut FileReport,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
    let mut page = Page::default();
    let mut buf = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0u64;
    let mut record = 0u64;
    loop {
        buf.clear();
        let n = match opened.reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let kind = classify_io(&e, opened.gzip);
                let pos = opened
                    .compressed_pos
                    .load(std::sync::atomic::Ordering::Relaxed);
                report.issue(
                    opts.strict,
                    path,
                    format!("byte {offset} of the text (compressed byte ≤ {pos})"),
                    kind,
                    format!("{e}; the page being read there is dropped"),
                )?;
                return Ok(());
            }
        };
        let line_start = offset;
        offset += n as u64;
        // Universal newlines: a lone "\r" also ends a line.
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        for piece in body.split(|&b| b == b'\r') {
            let text = match super::utf8(piece) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => {
                    page.bad_utf8 = true;
                    String::from_utf8_lossy(piece)
                }
            };
            let i = line_no;
            line_no += 1;
            let line = py_strip(&text);
            if line.is_empty() {
                continue;
            }
            if line == "WARC/1.0" {
                if i > 0 {
                    finish(
                        path,
                        std::mem::take(&mut page),
                        opts,
                        report,
                        &mut record,
                        sink,
                    )?;
                }
                page = Page {
                    start: line_start,
                    ..Default::default()
                };
            }
            if let Some(rest) = line.strip_prefix("WARC-Target-URI:") {
                page.url = py_strip(rest).to_string();
            }
            if let Some(rest) = line.strip_prefix("WARC-Date:") {
                page.timestamp = py_strip(rest).to_string();
            }
            if let Some(rest) = line.strip_prefix("WARC-Type:") {
                page.warc_type = py_strip(rest).to_string();
            }
            if line.starts_with("WARC")
                || line.starts_with("CONTENT-")
                || line.starts_with("Content-")
            {
                continue;
            }
            if !page.text.is_empty() {
                page.text.push('\n');
            }
            page.text.push_str(line);
        }
    }
    finish(path, page, opts, report, &mut record, sink)
}

fn finish(
    path: &Path,
    page: Page,
    opts: &ReadOptions,
    report: &mut FileReport,
    record: &mut u64,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
    if !page.warc_type.is_empty() && !matches!(page.warc_type.as_str(), "conversion" | "warcinfo") {
        report.wet.other_record_type += 1;
        return Ok(());
    }
    if page.url.is_empty() {
        report.wet.no_url += 1;
        return Ok(());
    }
    if page.text.is_empty() {
        report.wet.no_content += 1;
        return Ok(());
    }
    if page.timestamp.is_empty() {
        report.wet.no_timestamp += 1;
        return Ok(());
    }
    if page.bad_utf8 {
        return report.issue(
            opts.strict,
            path,
            format!("record at byte {} ({})", page.start, page.url),
            "invalid_utf8",
            "invalid UTF-8 in the record; it is skipped".into(),
        );
    }
    let doc = Document {
        url: page.url,
        timestamp: page.timestamp,
        text: page.text,
        record: *record,
    };
    *record += 1;
    sink(doc, report)
}
