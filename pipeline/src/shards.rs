//! Example shards: plain Parquet files that pyarrow, DuckDB or HF datasets
//! read without t5mix. Columns `task` (dictionary-encoded string), `inputs`
//! and `targets` (`list<int32>`), zstd; how the shard was made goes into the
//! file's key/value metadata. Files are written under a temporary name and
//! renamed when complete.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder, StringDictionaryBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::atomic::AtomicFile;
use crate::error::{PipelineError, Result};

/// One example of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardExample {
    /// The task it came from.
    pub task: String,
    /// Encoder tokens (EOS included).
    pub inputs: Vec<u32>,
    /// Decoder tokens (EOS included).
    pub targets: Vec<u32>,
    /// The `(inputs, targets)` text before tokenization (seqio's
    /// `*_pretokenized` features), when the build keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretokenized: Option<(String, String)>,
}

/// Token statistics of a set of examples (seqio's `stats.<split>.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExampleStats {
    /// Number of examples.
    pub examples: u64,
    /// Sum of input lengths.
    pub inputs_tokens: u64,
    /// Longest inputs.
    pub inputs_max_tokens: u64,
    /// Sum of target lengths.
    pub targets_tokens: u64,
    /// Longest targets.
    pub targets_max_tokens: u64,
}

impl ExampleStats {
    /// Counts one example.
    pub fn add(&mut self, inputs: usize, targets: usize) {
        self.examples += 1;
        self.inputs_tokens += inputs as u64;
        self.targets_tokens += targets as u64;
        self.inputs_max_tokens = self.inputs_max_tokens.max(inputs as u64);
        self.targets_max_tokens = self.targets_max_tokens.max(targets as u64);
    }

    /// Adds another set.
    pub fn merge(&mut self, o: &ExampleStats) {
        self.examples += o.examples;
        self.inputs_tokens += o.inputs_tokens;
        self.targets_tokens += o.targets_tokens;
        self.inputs_max_tokens = self.inputs_max_tokens.max(o.inputs_max_tokens);
        self.targets_max_tokens = self.targets_max_tokens.max(o.targets_max_tokens);
    }
}

/// The schema of example shards, with the nullable `inputs_pretokenized` /
/// `targets_pretokenized` text columns when `pretokenized`.
/// `(key, value)` pairs as Parquet footer metadata.
pub(crate) fn key_values(metadata: &[(String, String)]) -> Vec<KeyValue> {
    metadata
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

pub fn example_schema(pretokenized: bool) -> Arc<Schema> {
    let list = |name: &str| {
        Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            false,
        )
    };
    let mut fields = vec![
        Field::new(
            "task",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        list("inputs"),
        list("targets"),
    ];
    if pretokenized {
        fields.push(Field::new("inputs_pretokenized", DataType::Utf8, true));
        fields.push(Field::new("targets_pretokenized", DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// Writes `examples` to `path` atomically, with `metadata` as key/value pairs.
pub fn write_example_shard(
    path: &Path,
    examples: &[ShardExample],
    metadata: &[(String, String)],
) -> Result<()> {
    let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut file = AtomicFile::create(path)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| pq(&e))?,
        ))
        .set_max_row_group_row_count(Some(16_384))
        .set_key_value_metadata(Some(key_values(metadata)))
        .build();
    let with_text = examples.iter().any(|e| e.pretokenized.is_some());
    let schema = example_schema(with_text);
    let mut w = ArrowWriter::try_new(file.take_writer(), schema.clone(), Some(props))
        .map_err(|e| pq(&e))?;
    for chunk in examples.chunks(16_384) {
        let mut task = StringDictionaryBuilder::<Int32Type>::new();
        let mut inputs = ListBuilder::new(Int32Builder::new());
        let mut targets = ListBuilder::new(Int32Builder::new());
        let mut inputs_text = StringBuilder::new();
        let mut targets_text = StringBuilder::new();
        for e in chunk {
            if with_text {
                match &e.pretokenized {
                    Some((i, t)) => {
                        inputs_text.append_value(i);
                        targets_text.append_value(t);
                    }
                    None => {
                        inputs_text.append_null();
                        targets_text.append_null();
                    }
                }
            }
            task.append_value(&e.task);
            inputs
                .values()
                .extend(e.inputs.iter().map(|&x| Some(x as i32)));
            inputs.append(true);
            targets
                .values()
                .extend(e.targets.iter().map(|&x| Some(x as i32)));
            targets.append(true);
        }
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(task.finish()),
            Arc::new(inputs.finish()),
            Arc::new(targets.finish()),
        ];
        if with_text {
            cols.push(Arc::new(inputs_text.finish()));
            cols.push(Arc::new(targets_text.finish()));
        }
        let batch = RecordBatch::try_new(schema.clone(), cols).map_err(|e| pq(&e))?;
        w.write(&batch).map_err(|e| pq(&e))?;
    }
    let inner = w.into_inner().map_err(|e| pq(&e))?;
    file.commit_file(inner)?;
    Ok(())
}

/// A shard's key/value metadata.
pub type ShardMetadata = Vec<(String, String)>;

/// A shard's key/value metadata, from its footer only (no row is read).
pub fn read_shard_metadata(path: &Path) -> Result<ShardMetadata> {
    crate::error::parquet_guard(path, || {
        let f = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| PipelineError::Parquet {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(footer_metadata(&builder))
    })
}

fn footer_metadata<T>(
    builder: &parquet::arrow::arrow_reader::ArrowReaderBuilder<T>,
) -> ShardMetadata {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads every example of a shard, with the file's key/value metadata.
pub fn read_example_shard(path: &Path) -> Result<(Vec<ShardExample>, ShardMetadata)> {
    crate::error::parquet_guard(path, || {
        let pq = |e: &dyn std::fmt::Display| PipelineError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let f = File::open(path).map_err(|e| PipelineError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| pq(&e))?;
        let meta = footer_metadata(&builder);
        let mut out = Vec::new();
        for batch in builder.build().map_err(|e| pq(&e))? {
            let batch = batch.map_err(|e| pq(&e))?;
            let bad = |what: &str| PipelineError::BadInput {
                path: path.to_path_buf(),
                location: "schema".into(),
                message: format!("column {what} missing or of the wrong type"),
            };
            let task = batch.column_by_name("task").ok_or_else(|| bad("task"))?;
            let task = arrow_cast_to_strings(task).ok_or_else(|| bad("task"))?;
            let lists = |name: &str| -> Result<Vec<Vec<u32>>> {
                let col = batch.column_by_name(name).ok_or_else(|| bad(name))?;
                let l = col.as_list_opt::<i32>().ok_or_else(|| bad(name))?;
                let mut v = Vec::with_capacity(l.len());
                for i in 0..l.len() {
                    let a = l.value(i);
                    let ints = a.as_primitive_opt::<Int32Type>().ok_or_else(|| bad(name))?;
                    v.push(ints.values().iter().map(|&x| x as u32).collect());
                }
                Ok(v)
            };
            let inputs = lists("inputs")?;
            let targets = lists("targets")?;
            let text = |name: &str| -> Option<Vec<Option<String>>> {
                let col = batch.column_by_name(name)?.as_string_opt::<i32>()?;
                Some(
                    (0..col.len())
                        .map(|i| (!col.is_null(i)).then(|| col.value(i).to_string()))
                        .collect(),
                )
            };
            let (it, tt) = (text("inputs_pretokenized"), text("targets_pretokenized"));
            for (k, ((t, i), g)) in task.into_iter().zip(inputs).zip(targets).enumerate() {
                let pretokenized = match (&it, &tt) {
                    (Some(a), Some(b)) => a[k].clone().zip(b[k].clone()),
                    _ => None,
                };
                out.push(ShardExample {
                    task: t,
                    inputs: i,
                    targets: g,
                    pretokenized,
                });
            }
        }
        Ok((out, meta))
    })
}

fn arrow_cast_to_strings(col: &ArrayRef) -> Option<Vec<String>> {
    if let Some(d) = col.as_dictionary_opt::<Int32Type>() {
        let values = d.values().as_string_opt::<i32>()?;
        return Some(
            d.keys()
                .iter()
                .map(|k| values.value(k.unwrap_or(0) as usize).to_string())
                .collect(),
        );
    }
    let s = col.as_string_opt::<i32>()?;
    Some((0..s.len()).map(|i| s.value(i).to_string()).collect())
}

/// What `t5mix inspect` reports on a shard or a folder of shards: metadata,
/// examples and tokens per task, length histograms, the first examples.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The shard files, sorted.
    pub files: Vec<std::path::PathBuf>,
    /// The first shard's `t5mix.*` metadata.
    pub metadata: ShardMetadata,
    /// Statistics per task.
    pub tasks: std::collections::BTreeMap<String, ExampleStats>,
    /// Length of every example's inputs.
    pub inputs_lengths: Vec<usize>,
    /// Length of every example's targets.
    pub targets_lengths: Vec<usize>,
    /// The first examples.
    pub sample: Vec<ShardExample>,
    /// A folder without a manifest (partial, or not written by t5mix).
    pub partial: bool,
}

impl Inspection {
    /// Reads `path` (a shard, or every `.parquet` file of a folder), keeping
    /// the first `n` examples.
    pub fn read(path: &Path, n: usize) -> Result<Self> {
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| PipelineError::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            return Err(PipelineError::NoInput(format!(
                "{}: no Parquet shards",
                path.display()
            )));
        }
        let mut out = Inspection {
            files: files.clone(),
            metadata: Vec::new(),
            tasks: Default::default(),
            inputs_lengths: Vec::new(),
            targets_lengths: Vec::new(),
            sample: Vec::new(),
            partial: path.is_dir() && !path.join(crate::manifest::MANIFEST).exists(),
        };
        for f in &files {
            let (examples, meta) = read_example_shard(f)?;
            if out.metadata.is_empty() {
                out.metadata = meta;
            }
            for e in examples {
                out.tasks
                    .entry(e.task.clone())
                    .or_default()
                    .add(e.inputs.len(), e.targets.len());
                out.inputs_lengths.push(e.inputs.len());
                out.targets_lengths.push(e.targets.len());
                if out.sample.len() < n {
                    out.sample.push(e);
                }
            }
        }
        Ok(out)
    }

    /// The report, decoding the sample with `vocab` when given.
    pub fn report(&self, vocab: Option<&crate::vocab::Vocabulary>) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        if self.partial {
            let _ = writeln!(
                s,
                "warning: no manifest.json: a partial folder (an interrupted build) or not t5mix's"
            );
        }
        let _ = writeln!(
            s,
            "schema: task: dictionary<int32, utf8>, inputs: list<int32>, targets: list<int32>"
        );
        for (k, v) in self
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("t5mix."))
        {
            let _ = writeln!(s, "  {k} = {v}");
        }
        let total: u64 = self.tasks.values().map(|t| t.examples).sum();
        for (t, x) in &self.tasks {
            let _ = writeln!(
                s,
                "task {t}: {} examples ({:.1}%), inputs {} tokens (max {}), targets {} tokens (max {})",
                x.examples,
                100.0 * x.examples as f64 / total.max(1) as f64,
                x.inputs_tokens,
                x.inputs_max_tokens,
                x.targets_tokens,
                x.targets_max_tokens
            );
        }
        let _ = writeln!(s, "inputs lengths:  {}", histogram(&self.inputs_lengths));
        let _ = writeln!(s, "targets lengths: {}", histogram(&self.targets_lengths));
        for e in &self.sample {
            let _ = writeln!(s, "--- {} ---", e.task);
            match vocab {
                Some(v) => {
                    let _ = writeln!(s, "inputs:  {}", v.decode(&e.inputs));
                    let _ = writeln!(s, "targets: {}", v.decode(&e.targets));
                }
                None => {
                    let _ = writeln!(s, "inputs:  {:?}", &e.inputs[..e.inputs.len().min(32)]);
                    let _ = writeln!(s, "targets: {:?}", &e.targets[..e.targets.len().min(32)]);
                }
            }
        }
        s
    }
}

/// Eight equal-width bins from 0 to the longest length.
fn histogram(lengths: &[usize]) -> String {
    let Some(&max) = lengths.iter().max() else {
        return "-".into();
    };
    let width = max.div_ceil(8).max(1);
    let mut counts = [0usize; 8];
    for &l in lengths {
        counts[(l / width).min(7)] += 1;
    }
    let bins: Vec<String> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| format!("[{}..{}]:{c}", i * width, (i + 1) * width))
        .collect();
    bins.join(" ")
}
