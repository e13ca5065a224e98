//! Parquet files with a text column (and optional URL / timestamp columns),
//! read one record batch at a time.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Document, FileReport, ReadOptions};
use crate::error::{PipelineError, Result};

fn str_at(col: &ArrayRef, row: usize) -> Option<String> {
    if col.is_null(row) {
        return None;
    }
    if let Some(a) = col.as_string_opt::<i32>() {
        return Some(a.value(row).to_string());
    }
    if let Some(a) = col.as_string_opt::<i64>() {
        return Some(a.value(row).to_string());
    }
    if let Some(a) = col.as_string_view_opt() {
        return Some(a.value(row).to_string());
    }
    None
}

fn is_string(col: &ArrayRef) -> bool {
    col.as_string_opt::<i32>().is_some()
        || col.as_string_opt::<i64>().is_some()
        || col.as_string_view_opt().is_some()
}

pub(super) fn read(
    path: &Path,
    opts: &ReadOptions,
    report: &mut FileReport,
    sink: &mut dyn FnMut(Document, &mut FileReport) -> Result<()>,
) -> Result<()> {
    crate::error::parquet_guard(path, || {
        let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let file = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let reader = match ParquetRecordBatchReaderBuilder::try_new(file) {
            Ok(b) => b.with_batch_size(1024).build().map_err(|e| pq(&e))?,
            Err(e) => {
                return report.issue(
                    opts.strict,
                    path,
                    "footer".into(),
                    "malformed_record",
                    format!("not a readable Parquet file: {e}"),
                )
            }
        };
        let mut row_base = 0usize;
        let mut record = 0u64;
        for batch in reader {
            let batch: RecordBatch = match batch {
                Ok(b) => b,
                Err(e) => {
                    return report.issue(
                        opts.strict,
                        path,
                        format!("row {row_base}"),
                        "read_error",
                        format!("{e}; rows before it are kept"),
                    )
                }
            };
            let text =
                batch
                    .column_by_name(&opts.text_field)
                    .ok_or_else(|| PipelineError::BadInput {
                        path: path.to_path_buf(),
                        location: "schema".into(),
                        message: format!(
                            "no column {:?} (columns: {})",
                            opts.text_field,
                            batch
                                .schema()
                                .fields()
                                .iter()
                                .map(|f| f.name().as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })?;
            if !is_string(text) {
                return Err(PipelineError::BadInput {
                    path: path.to_path_buf(),
                    location: "schema".into(),
                    message: format!(
                        "column {:?} has type {}, expected a string type",
                        opts.text_field,
                        text.data_type()
                    ),
                });
            }
            let url = batch
                .column_by_name(&opts.url_field)
                .filter(|c| is_string(c));
            let ts = batch
                .column_by_name(&opts.timestamp_field)
                .filter(|c| is_string(c));
            for row in 0..batch.num_rows() {
                let Some(t) = str_at(text, row) else {
                    report.issue(
                        opts.strict,
                        path,
                        format!("row {}", row_base + row),
                        "missing_field",
                        format!("null {:?}", opts.text_field),
                    )?;
                    continue;
                };
                let doc = Document {
                    url: url
                        .and_then(|c| str_at(c, row))
                        .unwrap_or_else(|| format!("{}#{}", path.display(), row_base + row)),
                    timestamp: ts.and_then(|c| str_at(c, row)).unwrap_or_default(),
                    text: t,
                    record,
                };
                record += 1;
                sink(doc, report)?;
            }
            row_base += batch.num_rows();
        }
        Ok(())
    })
}
