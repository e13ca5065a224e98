//! JSON Lines: one object per line, fields named by [`ReadOptions`] (dotted
//! paths reach nested objects, e.g. dolma's `metadata.warc_url`).

use std::io::BufRead;
use std::path::Path;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{classify_io, Document, FileReport, Opened, ReadOptions};
use crate::error::Result;

/// Moves the string (or number, as text) at a dotted path out of `v`.
fn take_text(v: &mut Value, dotted: &str) -> Option<String> {
    let mut cur = v;
    for part in dotted.split('.') {
        cur = cur.get_mut(part)?;
    }
    scalar_text(cur)
}

/// Moves the string (or number, as text) out of `v`.
fn scalar_text(v: &mut Value) -> Option<String> {
    match v {
        Value::String(s) => Some(std::mem::take(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Pulls the text, URL and timestamp fields out of a JSON object while it is
/// parsed, without building the other fields' values: only the values of
/// the keys the fields name (a dotted field: its top-level object) become
/// `Value`s, taken apart by [`take_text`] (the text is moved, not copied).
/// Anything but an object is an error (the caller then parses the line as a
/// `Value` to say what is wrong).
struct Extract<'a> {
    fields: [&'a str; 3],
}

impl<'de> DeserializeSeed<'de> for Extract<'_> {
    type Value = [Option<String>; 3];
    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Extract<'_> {
    type Value = [Option<String>; 3];
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out: [Option<String>; 3] = Default::default();
        while let Some(key) = map.next_key::<String>()? {
            // the fields named by this key: itself, or a dotted path under it
            let (direct, nested): (Vec<usize>, Vec<usize>) = (0..3)
                .filter(|&i| self.fields[i].split('.').next() == Some(key.as_str()))
                .partition(|&i| self.fields[i] == key);
            if direct.is_empty() && nested.is_empty() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let mut v: Value = map.next_value()?;
            for i in nested {
                out[i] = take_text(&mut v, &self.fields[i][key.len() + 1..]);
            }
            if let Some((&last, rest)) = direct.split_last() {
                let text = scalar_text(&mut v);
                for &i in rest {
                    out[i] = text.clone();
                }
                out[last] = text;
            }
        }
        Ok(out)
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
        // One UTF-8 check of the whole line (serde_json's byte reader checks
        // every piece between escapes, i.e. every line of a page, one by one).
        let line = match super::utf8(&buf) {
            Ok(l) => l,
            Err(u) => {
                report.issue(opts.strict, path, loc(), "invalid_utf8", u.to_string())?;
                continue;
            }
        };
        let fields = [
            opts.text_field.as_str(),
            opts.url_field.as_str(),
            opts.timestamp_field.as_str(),
        ];
        let mut de = serde_json::Deserializer::from_str(line);
        let extracted = Extract { fields }
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|()| v));
        let [text, url, timestamp] = match extracted {
            Ok(v) => v,
            Err(_) => match serde_json::from_str::<Value>(line) {
                Ok(mut v) => fields.map(|f| take_text(&mut v, f)),
                Err(e) => {
                    // A partial last line without newline is most likely a cut file.
                    let kind = if !buf.ends_with(b"\n") && e.is_eof() {
                        "truncated_record"
                    } else {
                        "malformed_record"
                    };
                    report.issue(opts.strict, path, loc(), kind, e.to_string())?;
                    continue;
                }
            },
        };
        let Some(text) = text else {
            report.issue(
                opts.strict,
                path,
                loc(),
                "missing_field",
                format!("no string field {:?}", opts.text_field),
            )?;
            continue;
        };
        let url = url.unwrap_or_else(|| format!("{}#{}", path.display(), line_no));
        let timestamp = timestamp.unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming extractor gives what taking the fields out of a parsed
    /// `Value` gives, or fails (and the reader then uses the `Value`).
    #[test]
    fn extractor_agrees_with_value() {
        let lines = [
            r#"{"text":"a\nb","url":"u","timestamp":"t","other":{"x":[1,2,{"y":null}]}}"#,
            r#"{"text":"dup","text":"last","url":7,"timestamp":1.5e3}"#,
            r#"{"text":"x","text":null}"#,
            r#"{"te\u0078t":"escaped key","url":-3}"#,
            r#"{"text":["not","text"],"metadata":{"url":"nested","created":"2019"}}"#,
            r#"{"metadata":"flat","text":"t"}"#,
            r#"{"text":true,"url":{"a":1}}"#,
            r#"[1,2,3]"#,
            r#""just a string""#,
            r#"{"text":"é ✓ \ud83d\ude00"}"#,
            r#"{"a.b":"dotted key","a":{"b":"nested"},"text":"t"}"#,
        ];
        for fields in [
            ["text", "url", "timestamp"],
            ["text", "metadata.url", "metadata.created"],
            ["text", "metadata", "text"],
            ["a.b", "text", "a"],
        ] {
            for line in lines {
                let by_value = serde_json::from_str::<Value>(line)
                    .map(|v| fields.map(|f| take_text(&mut v.clone(), f)))
                    .unwrap();
                let mut de = serde_json::Deserializer::from_str(line);
                let got = Extract { fields }.deserialize(&mut de);
                match got {
                    Ok(got) => assert_eq!(got, by_value, "{line} {fields:?}"),
                    Err(_) => assert_eq!(by_value, [None, None, None], "{line}"),
                }
            }
        }
    }
}
