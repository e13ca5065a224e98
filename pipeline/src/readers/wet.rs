//! Common Crawl WET files: WARC records framed by their `Content-Length`
//! (as WARC readers read them), each record's text taken exactly as tfds
//! `c4_utils.split_wet_file` takes it.
//!
//! tfds reads the file line by line (universal newlines), strips each line,
//! skips empty ones, starts a page at each `WARC/1.0` line, takes the URL from
//! `WARC-Target-URI:` and the timestamp from `WARC-Date:`, leaves out every
//! line that starts with `WARC`, `CONTENT-` or `Content-`, and joins the
//! rest with `\n`. A page without URL, text or timestamp is skipped.
//!
//! Here a record's content is its `Content-Length` bytes when they end
//! where the next record (or the file) begins, so a `WARC/1.0` line inside
//! a page no longer cuts it in two (counted: `warc_lines_in_content`) and a
//! record is complete as soon as its bytes are read (garbage after the last
//! gzip member loses nothing). A `Content-Length` that is missing or does
//! not end at a record boundary (tfds's own test files have such) is
//! reported, and the record then runs to the next `WARC/1.0` line exactly as
//! tfds reads it; a record cut short by the end of the file is reported
//! (and kept, as tfds keeps it). Reports are errors with `--strict`.
//!
//! Full WARC files are read too: a `response` record (framed by its
//! `Content-Length`) is an HTTP response whose HTML becomes the page text
//! through [`super::html`] (`--extractor`), with its URL and `WARC-Date`;
//! records of other types (`request`, `metadata`, …) are counted and
//! skipped, as are responses that are not HTML or have no text (by reason,
//! with the charsets in `responses` / `charsets`).

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
    /// `WARC/1.0` lines inside a record's content (tfds would have cut the
    /// page there).
    #[serde(default)]
    pub warc_lines_in_content: u64,
    /// Records by `WARC-Type`.
    #[serde(default)]
    pub records_by_type: std::collections::BTreeMap<String, u64>,
    /// WARC `response` records: pages made, and the others by reason
    /// (`not_html`, `http_status_not_2xx`, `no_text`, `binary_body`,
    /// `huge_html`, `bad_http`, `unframed`).
    #[serde(default)]
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Pages by the charset their HTML was decoded from.
    #[serde(default)]
    pub charsets: std::collections::BTreeMap<String, u64>,
}

impl WetCounters {
    /// Adds `o` into `self`.
    pub fn merge(&mut self, o: &WetCounters) {
        self.no_url += o.no_url;
        self.no_content += o.no_content;
        self.no_timestamp += o.no_timestamp;
        self.other_record_type += o.other_record_type;
        self.warc_lines_in_content += o.warc_lines_in_content;
        for (mine, theirs) in [
            (&mut self.records_by_type, &o.records_by_type),
            (&mut self.responses, &o.responses),
            (&mut self.charsets, &o.charsets),
        ] {
            for (k, v) in theirs {
                *mine.entry(k.clone()).or_default() += v;
            }
        }
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
    /// A `response` record's content (the HTTP response), read whole.
    raw: Option<Vec<u8>>,
}

impl Page {
    /// Adds one physical line (without its newline) by tfds's rules;
    /// returns whether it was a `WARC/1.0` line.
    fn add_line(&mut self, raw: &[u8]) -> bool {
        let mut version = false;
        // universal newlines: a lone "\r" also ends a line
        for piece in raw.split(|&b| b == b'\r') {
            let text = match super::utf8(piece) {
                Ok(t) => std::borrow::Cow::Borrowed(t),
                Err(_) => {
                    self.bad_utf8 = true;
                    String::from_utf8_lossy(piece)
                }
            };
            let line = py_strip(&text);
            if line.is_empty() {
                continue;
            }
            version |= line == "WARC/1.0";
            if let Some(rest) = line.strip_prefix("WARC-Target-URI:") {
                self.url = py_strip(rest).to_string();
            }
            if let Some(rest) = line.strip_prefix("WARC-Date:") {
                self.timestamp = py_strip(rest).to_string();
            }
            if let Some(rest) = line.strip_prefix("WARC-Type:") {
                self.warc_type = py_strip(rest).to_string();
            }
            if line.starts_with("WARC")
                || line.starts_with("CONTENT-")
                || line.starts_with("Content-")
            {
                continue;
            }
            if !self.text.is_empty() {
                self.text.push('\n');
            }
            self.text.push_str(line);
        }
        version
    }
}

/// Whether `line` opens a record (tfds: the stripped line is `WARC/1.0`).
fn is_version_line(line: &[u8]) -> bool {
    line.trim_ascii() == b"WARC/1.0"
}

/// Reads the next line into `line` (cleared first): its start offset, or
/// `None` at the end of the file.
fn next_line(
    reader: &mut dyn BufRead,
    line: &mut Vec<u8>,
    offset: &mut u64,
) -> std::io::Result<Option<u64>> {
    line.clear();
    let at = *offset;
    let n = reader.read_until(b'\n', line)?;
    *offset += n as u64;
    Ok((n > 0).then_some(at))
}

pub(super) fn read(
    path: &Path,
    mut opened: Opened,
    opts: &ReadOptions,
    report: &mut FileReport,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
    let mut record = 0u64;
    let mut offset = 0u64;
    let mut line = Vec::new();
    // a version line already read (the end of a record without a usable
    // Content-Length), to open the next record with
    let mut pending: Option<(u64, Vec<u8>)> = None;
    let mut records = 0u64;
    let io_issue = |e: std::io::Error, at: u64, report: &mut FileReport, opened: &Opened| {
        let kind = classify_io(&e, opened.gzip);
        let pos = opened
            .compressed_pos
            .load(std::sync::atomic::Ordering::Relaxed);
        report.issue(
            opts.strict,
            path,
            format!("byte {at} of the text (compressed byte ≤ {pos})"),
            kind,
            format!("{e}; the record being read there is dropped"),
        )
    };
    loop {
        // the next record's version line, skipping blank lines between records
        let (start, first) = match pending.take() {
            Some(p) => p,
            None => {
                let mut skipped = None;
                loop {
                    let at = match next_line(&mut opened.reader, &mut line, &mut offset) {
                        Ok(Some(at)) => at,
                        Ok(None) => break,
                        Err(e) => return io_issue(e, offset, report, &opened),
                    };
                    if is_version_line(&line) {
                        break;
                    }
                    if !line.trim_ascii().is_empty() && skipped.is_none() {
                        skipped = Some(at);
                    }
                }
                if let Some(at) = skipped {
                    report.issue(
                        opts.strict,
                        path,
                        format!("byte {at}"),
                        "not_a_record",
                        if records == 0 && line.is_empty() {
                            "no WARC record in the file (is it WET?)".into()
                        } else {
                            "text outside a WARC record; skipped to the next record".into()
                        },
                    )?;
                }
                if line.is_empty() {
                    return Ok(());
                }
                (offset - line.len() as u64, std::mem::take(&mut line))
            }
        };
        records += 1;
        let mut page = Page {
            start,
            ..Default::default()
        };
        page.add_line(first.strip_suffix(b"\n").unwrap_or(&first));
        // header lines up to the blank line
        let mut length: Option<std::result::Result<u64, String>> = None;
        loop {
            match next_line(&mut opened.reader, &mut line, &mut offset) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return io_issue(e, offset, report, &opened),
            }
            if line.trim_ascii().is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            if let Some(v) = text.trim().strip_prefix("Content-Length:") {
                length = Some(v.trim().parse().map_err(|_| v.trim().to_string()));
            }
            page.add_line(line.strip_suffix(b"\n").unwrap_or(&line));
        }
        match length {
            Some(Ok(n)) => {
                let mut content = Vec::with_capacity(n.min(1 << 24) as usize);
                let at = offset;
                let got = std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut opened.reader, n),
                    &mut content,
                );
                offset += content.len() as u64;
                if let Err(e) = got {
                    return io_issue(e, at, report, &opened);
                }
                // a version line followed by a WARC header line inside the
                // content: the next record, under a Content-Length too large
                let lines: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
                let holds_record = lines
                    .windows(2)
                    .any(|w| is_version_line(w[0]) && w[1].trim_ascii().starts_with(b"WARC-"));
                if (content.len() as u64) < n && !holds_record {
                    // cut short by the end of the file: kept as tfds keeps
                    // it, and reported
                    report.issue(
                        opts.strict,
                        path,
                        format!("record at byte {start}"),
                        "truncated_record",
                        format!(
                            "Content-Length {n} but the file ends after {} bytes",
                            content.len()
                        ),
                    )?;
                    if page.warc_type == "response" {
                        page.raw = Some(content);
                    } else {
                        for l in lines {
                            page.add_line(l);
                        }
                    }
                    return finish(path, page, opts, report, &mut record, sink);
                }
                // what follows: blank lines, then the next record or the end
                let mut after = Vec::new();
                let next = loop {
                    line.clear();
                    match opened.reader.read_until(b'\n', &mut line) {
                        Ok(0) => break Ok(None),
                        Ok(_) if line.trim_ascii().is_empty() => after.extend_from_slice(&line),
                        Ok(_) => break Ok(Some(std::mem::take(&mut line))),
                        Err(e) => break Err(e),
                    }
                };
                let at_boundary = (content.len() as u64) == n
                    && !holds_record
                    && !matches!(&next, Ok(Some(l)) if !is_version_line(l));
                match next {
                    next if at_boundary => {
                        // the record ends where the next begins: take it whole
                        if page.warc_type == "response" {
                            page.raw = Some(content);
                        } else {
                            for l in lines {
                                if page.add_line(l) {
                                    report.wet.warc_lines_in_content += 1;
                                }
                            }
                        }
                        offset += after.len() as u64;
                        let end = offset;
                        finish(path, page, opts, report, &mut record, sink)?;
                        match next {
                            Ok(Some(l)) => {
                                offset += l.len() as u64;
                                pending = Some((end, l));
                                continue;
                            }
                            Ok(None) => return Ok(()),
                            Err(e) => return io_issue(e, end, report, &opened),
                        }
                    }
                    next => {
                        report.issue(
                            opts.strict,
                            path,
                            format!("record at byte {start}"),
                            "content_length_mismatch",
                            format!(
                                "Content-Length {n} does not end at a record boundary; read up to \
                                 the next WARC/1.0 line as tfds does"
                            ),
                        )?;
                        // read it all again, line by line
                        let mut back = content;
                        back.extend_from_slice(&after);
                        if let Ok(Some(l)) = next {
                            back.extend_from_slice(&l);
                        }
                        offset = at;
                        let rest =
                            std::mem::replace(&mut opened.reader, Box::new(std::io::empty()));
                        opened.reader =
                            Box::new(std::io::Read::chain(std::io::Cursor::new(back), rest));
                    }
                }
            }
            bad => {
                report.issue(
                    opts.strict,
                    path,
                    format!("record at byte {start}"),
                    "bad_content_length",
                    match bad {
                        Some(Err(v)) => format!(
                            "Content-Length {v:?} is not a number; read up to the next record"
                        ),
                        _ => "no Content-Length; read up to the next record".into(),
                    },
                )?;
            }
        }
        // the record runs to the next WARC/1.0 line (tfds's framing)
        loop {
            let at = match next_line(&mut opened.reader, &mut line, &mut offset) {
                Ok(Some(at)) => at,
                Ok(None) => break,
                Err(e) => return io_issue(e, offset, report, &opened),
            };
            if is_version_line(&line) {
                pending = Some((at, std::mem::take(&mut line)));
                break;
            }
            page.add_line(line.strip_suffix(b"\n").unwrap_or(&line));
        }
        finish(path, page, opts, report, &mut record, sink)?;
    }
}

fn finish(
    path: &Path,
    page: Page,
    opts: &ReadOptions,
    report: &mut FileReport,
    record: &mut u64,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
    if !page.warc_type.is_empty() {
        *report
            .wet
            .records_by_type
            .entry(page.warc_type.clone())
            .or_default() += 1;
    }
    let page = if page.warc_type == "response" {
        match response_page(path, page, opts, report)? {
            Some(p) => p,
            None => return Ok(()),
        }
    } else {
        page
    };
    if !page.warc_type.is_empty()
        && !matches!(
            page.warc_type.as_str(),
            "conversion" | "warcinfo" | "response"
        )
    {
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

/// A WARC `response` record's page: its HTML extracted
/// ([`super::html::extract_response`]); `None` (counted) when it has none.
fn response_page(
    path: &Path,
    mut page: Page,
    opts: &ReadOptions,
    report: &mut FileReport,
) -> Result<Option<Page>> {
    use super::html::{extract_response, Skip};
    let mut count = |k: &str| *report.wet.responses.entry(k.to_string()).or_default() += 1;
    let Some(raw) = page.raw.take() else {
        // framed by WARC/1.0 lines only: its bytes were not kept
        count("unframed");
        return Ok(None);
    };
    match extract_response(&raw, opts.extractor) {
        Ok(e) => {
            count("pages");
            *report.wet.charsets.entry(e.charset).or_default() += 1;
            if let Some(label) = e.unknown_charset {
                report.issue(
                    opts.strict,
                    path,
                    format!("record at byte {} ({})", page.start, page.url),
                    "unknown_charset",
                    format!("charset {label:?} is unknown; read as UTF-8"),
                )?;
            }
            page.text = e.text;
            Ok(Some(page))
        }
        Err(skip) => {
            count(skip.kind());
            if matches!(
                skip,
                Skip::Binary | Skip::Huge(_) | Skip::BadHttp(_) | Skip::DeeplyNested(_)
            ) {
                report.issue(
                    opts.strict,
                    path,
                    format!("record at byte {} ({})", page.start, page.url),
                    skip.kind(),
                    format!("{skip:?}; the record is skipped"),
                )?;
            }
            Ok(None)
        }
    }
}
