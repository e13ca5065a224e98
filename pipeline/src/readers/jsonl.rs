//! JSON Lines: one object per line, fields named by [`ReadOptions`] (dotted
//! paths reach nested objects, e.g. dolma's `metadata.warc_url`).

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use super::{classify_io, Document, FileReport, Opened, ReadOptions};
use crate::error::Result;

fn field<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn read(
    path: &Path,
    mut opened: Opened,
    opts: &ReadOptions,
    report: &mut FileReport,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
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
                report.issue(
                    opts.strict,
                    path,
                    format!("line {} (byte {offset})", line_no + 1),
                    kind,
                    e.to_string(),
                )?;
                return Ok(());
            }
        };
        line_no += 1;
        let start = offset;
        offset += n as u64;
        let loc = || format!("line {line_no} (byte {start})");
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // serde_json checks UTF-8 itself; look closer only when it fails.
        let v: Value = match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(e) => {
                let (kind, msg) = match std::str::from_utf8(&buf) {
                    Err(u) => ("invalid_utf8", u.to_string()),
                    // A partial last line without newline is most likely a cut file.
                    Ok(_) if !buf.ends_with(b"\n") && e.is_eof() => {
                        ("truncated_record", e.to_string())
                    }
                    Ok(_) => ("malformed_record", e.to_string()),
                };
                report.issue(opts.strict, path, loc(), kind, msg)?;
                continue;
            }
        };
        let Some(text) = field(&v, &opts.text_field).and_then(as_text) else {
            report.issue(
                opts.strict,
                path,
                loc(),
                "missing_field",
                format!("no string field {:?}", opts.text_field),
            )?;
            continue;
        };
        let url = field(&v, &opts.url_field)
            .and_then(as_text)
            .unwrap_or_else(|| format!("{}#{}", path.display(), line_no));
        let timestamp = field(&v, &opts.timestamp_field)
            .and_then(as_text)
            .unwrap_or_default();
        let doc = Document {
            url,
            timestamp,
            text,
            record,
        };
        record += 1;
        sink(doc, report)?;
    }
    Ok(())
}
