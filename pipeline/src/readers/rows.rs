//! Rows of column → text from tabular files (TSV, CSV, JSON Lines, Parquet,
//! plain text): what a task's source reads. Files open through the same
//! reader as the crawl readers (gzip detected by content, also without a
//! `.gz` name); errors name the file and the line.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{PipelineError, Result};

/// One row: column name → text.
pub type Row = BTreeMap<String, String>;

fn bad(path: &Path, location: String, message: impl ToString) -> PipelineError {
    PipelineError::BadInput {
        path: path.to_path_buf(),
        location,
        message: message.to_string(),
    }
}

/// The whole (decompressed) text of a file.
pub fn read_text(path: &Path) -> Result<String> {
    let mut opened = super::open(path)?;
    let mut text = String::new();
    opened
        .reader
        .read_to_string(&mut text)
        .map_err(|e| bad(path, "read".into(), e))?;
    Ok(text)
}

/// Delimited rows: tab-separated without quoting (GLUE's files) or
/// comma-separated with quotes. Columns are named by the header, else by
/// `columns`, else "0", "1", ….
pub fn read_delimited(
    path: &Path,
    tab: bool,
    header: bool,
    columns: &[String],
) -> Result<Vec<Row>> {
    let opened = super::open(path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(if tab { b'\t' } else { b',' })
        .quoting(!tab)
        .has_headers(header)
        .flexible(true)
        .from_reader(opened.reader);
    let names: Vec<String> = if header {
        rdr.headers()
            .map_err(|e| bad(path, "header".into(), e))?
            .iter()
            .map(str::to_string)
            .collect()
    } else {
        columns.to_vec()
    };
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(path, format!("row {}", i + 1), e))?;
        rows.push(
            rec.iter()
                .enumerate()
                .map(|(k, v)| {
                    let name = names.get(k).cloned().unwrap_or_else(|| k.to_string());
                    (name, v.to_string())
                })
                .collect(),
        );
    }
    Ok(rows)
}

/// One JSON object per line: string, number and boolean fields; nested
/// objects give dotted names (`translation.en`), nulls are left out.
pub fn read_jsonl_rows(path: &Path) -> Result<Vec<Row>> {
    let text = read_text(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("line {}", i + 1);
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(path, at(), e))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad(path, at(), "not a JSON object"))?;
        let mut row = Row::new();
        flatten_json("", obj, &mut row);
        rows.push(row);
    }
    Ok(rows)
}

fn flatten_json(prefix: &str, obj: &serde_json::Map<String, serde_json::Value>, row: &mut Row) {
    for (k, v) in obj {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            serde_json::Value::String(s) => {
                row.insert(name, s.clone());
            }
            serde_json::Value::Null => {}
            serde_json::Value::Object(o) => flatten_json(&name, o, row),
            other => {
                row.insert(name, other.to_string());
            }
        }
    }
}

/// Parquet: string columns as they are, other columns printed (Arrow's
/// display), nulls left out.
pub fn read_parquet_rows(path: &Path) -> Result<Vec<Row>> {
    crate::error::parquet_guard(path, || {
        use arrow_array::Array;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let f = std::fs::File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.build())
            .map_err(|e| pq(&e))?;
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| pq(&e))?;
            let schema = batch.schema();
            let mut batch_rows = vec![Row::new(); batch.num_rows()];
            for (field, col) in schema.fields().iter().zip(batch.columns()) {
                let fmt =
                    arrow_cast::display::ArrayFormatter::try_new(col.as_ref(), &Default::default())
                        .map_err(|e| pq(&e))?;
                for (i, row) in batch_rows.iter_mut().enumerate() {
                    if !col.is_null(i) {
                        row.insert(field.name().clone(), fmt.value(i).to_string());
                    }
                }
            }
            rows.extend(batch_rows);
        }
        Ok(rows)
    })
}

/// Plain text: one row per non-empty line, columns `text` and `line` (its
/// 1-based number).
pub fn read_line_rows(path: &Path) -> Result<Vec<Row>> {
    Ok(read_text(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Row::from([
                ("text".to_string(), l.to_string()),
                ("line".to_string(), (i + 1).to_string()),
            ])
        })
        .collect())
}
