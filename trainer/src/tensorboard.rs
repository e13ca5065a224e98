//! TensorBoard scalars: an event file (`events.out.tfevents.*`) in the run's
//! folder, one `Event` per logged step — TFRecord framing (length, masked
//! CRC-32C of the length, data, masked CRC-32C of the data) around the
//! `tensorflow.Event` protobuf with `Summary.Value.simple_value` scalars, as
//! TensorFlow's and PyTorch's summary writers write them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(string, optional, tag = "3")]
    file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    summary: Option<Summary>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(string, tag = "1")]
    tag: String,
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// TFRecord's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Appends scalar events to a new event file in a run's folder.
pub struct EventWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    /// A new event file in `dir` (TensorBoard reads every file there, so a
    /// resumed run adds one).
    pub fn create(dir: &Path) -> Result<Self> {
        let t = now();
        let path = dir.join(format!(
            "events.out.tfevents.{}.t5mix.{}",
            t as u64,
            std::process::id()
        ));
        let file = std::fs::File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = EventWriter {
            path,
            file: std::io::BufWriter::new(file),
        };
        w.write(Event {
            wall_time: t,
            step: 0,
            file_version: Some("brain.Event:2".into()),
            summary: None,
        })?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the finite values of `scalars` (tag, value) at `step`.
    pub fn scalars(&mut self, step: u64, scalars: &[(String, f64)]) -> Result<()> {
        let value = scalars
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(tag, v)| Value {
                tag: tag.clone(),
                simple_value: Some(*v as f32),
            })
            .collect();
        self.write(Event {
            wall_time: now(),
            step: step as i64,
            file_version: None,
            summary: Some(Summary { value }),
        })?;
        self.file.flush().map_err(|e| TrainError::io(&self.path, e))
    }

    fn write(&mut self, e: Event) -> Result<()> {
        let data = prost::Message::encode_to_vec(&e);
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads back an event file: `(step, tag, value)` of every scalar, checking
/// each record's CRCs (what TensorBoard's reader checks).
pub fn read_scalars(path: &Path) -> Result<Vec<(u64, String, f32)>> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let bad = |m: &str| TrainError::Data(format!("{}: {m}", path.display()));
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(bad("truncated record header"));
        }
        let (len, crc) = (
            &rest[..8],
            u32::from_le_bytes(rest[8..12].try_into().unwrap()),
        );
        if masked_crc(len) != crc {
            return Err(bad("length CRC mismatch"));
        }
        let n = u64::from_le_bytes(len.try_into().unwrap()) as usize;
        if rest.len() < 12 + n + 4 {
            return Err(bad("truncated record"));
        }
        let data = &rest[12..12 + n];
        let crc = u32::from_le_bytes(rest[12 + n..16 + n].try_into().unwrap());
        if masked_crc(data) != crc {
            return Err(bad("data CRC mismatch"));
        }
        let e: Event = prost::Message::decode(data).map_err(|e| bad(&e.to_string()))?;
        for v in e.summary.map(|s| s.value).unwrap_or_default() {
            if let Some(x) = v.simple_value {
                out.push((e.step as u64, v.tag, x));
            }
        }
        rest = &rest[16 + n..];
    }
    Ok(out)
}
