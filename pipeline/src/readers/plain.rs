//! Plain text: the whole file as one document, or one document per
//! blank-line-separated block.

use std::io::Read;
use std::path::Path;

use super::{classify_io, Document, FileReport, Opened, ReadOptions, TextUnit};
use crate::error::Result;

pub(super) fn read(
    path: &Path,
    mut opened: Opened,
    opts: &ReadOptions,
    report: &mut FileReport,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
    let mut bytes = Vec::new();
    if let Err(e) = opened.reader.read_to_end(&mut bytes) {
        let kind = classify_io(&e, opened.gzip);
        report.issue(
            opts.strict,
            path,
            format!("byte {}", bytes.len()),
            kind,
            format!("{e}; the text read before it is kept"),
        )?;
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            report.issue(
                opts.strict,
                path,
                format!("byte {at}"),
                "invalid_utf8",
                "invalid UTF-8; bad bytes replaced by U+FFFD".into(),
            )?;
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    };
    let name = path.display().to_string();
    match opts.text_unit {
        TextUnit::File => {
            if !text.trim().is_empty() {
                sink(
                    Document {
                        url: name,
                        timestamp: String::new(),
                        text,
                        record: 0,
                    },
                    report,
                )?;
            }
        }
        TextUnit::Paragraph => {
            let mut record = 0u64;
            let mut block = String::new();
            let mut flush = |block: &mut String, report: &mut FileReport| -> Result<()> {
                if !block.trim().is_empty() {
                    let doc = Document {
                        url: format!("{name}#{record}"),
                        timestamp: String::new(),
                        text: std::mem::take(block),
                        record,
                    };
                    record += 1;
                    sink(doc, report)?;
                }
                block.clear();
                Ok(())
            };
            for line in text.lines() {
                if line.trim().is_empty() {
                    flush(&mut block, report)?;
                } else {
                    if !block.is_empty() {
                        block.push('\n');
                    }
                    block.push_str(line);
                }
            }
            flush(&mut block, report)?;
        }
    }
    Ok(())
}
