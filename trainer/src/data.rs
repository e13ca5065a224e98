//! Training data: the Parquet example shards of `t5mix build` (mixture
//! shards or task caches, one or many folders), streamed shard by shard in a
//! seeded order per epoch, through a seeded shuffle buffer, packed with the
//! feature converter and cut into batches.
//!
//! The stream is a pure function of (files, seed, options): a resumed run
//! replays it up to the batch it stopped at, so it sees exactly the batches
//! an uninterrupted run would. Memory: one shard plus the shuffle buffer
//! plus one packing window.

use std::collections::VecDeque;
use std::path::PathBuf;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use t5mix_pipeline::features::{EncDecExample, EncDecFeatureConverter, EncDecRow, Packing};
use t5mix_pipeline::shards::read_example_shard;

use crate::error::{Result, TrainError};
use crate::model::Batch;

/// Options of the batch stream.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    /// Encoder length.
    pub inputs_length: usize,
    /// Decoder length.
    pub targets_length: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Packing of examples into rows.
    pub packing: Packing,
    /// Examples in the shuffle buffer (0: no shuffling, file order).
    pub shuffle_buffer: usize,
    /// Seed of shard order and shuffling.
    pub seed: u64,
    /// Stop after this many passes over the data (`None`: repeat forever).
    pub epochs: Option<u64>,
    /// Hand out a last, smaller batch at the end of the data (evaluation)
    /// instead of dropping it (training).
    pub keep_partial: bool,
}

/// The shard files under `inputs` (files or folders), sorted.
pub fn shard_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| TrainError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension().is_some_and(|e| e == "parquet")
                        && !f
                            .file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with('.'))
                })
                .collect();
            v.sort();
            out.extend(v);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(TrainError::Data(format!(
                "{}: no such shard file or folder",
                p.display()
            )));
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!(
            "no .parquet shards in {:?}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        )));
    }
    Ok(out)
}

/// A batch of packed rows (or padded single examples) as the model takes it.
pub fn rows_to_batch(rows: &[EncDecRow]) -> Batch {
    let b = rows.len();
    let s = rows[0].encoder_input_tokens.len();
    let t = rows[0].decoder_target_tokens.len();
    let mut out = Batch {
        batch: b,
        enc_len: s,
        dec_len: t,
        enc_tokens: Vec::with_capacity(b * s),
        dec_inputs: Vec::with_capacity(b * t),
        targets: Vec::with_capacity(b * t),
        weights: Vec::with_capacity(b * t),
        enc_segments: Vec::with_capacity(b * s),
        dec_segments: rows[0].decoder_segment_ids.as_ref().map(|_| Vec::new()),
    };
    for r in rows {
        out.enc_tokens
            .extend(r.encoder_input_tokens.iter().map(|&x| x as usize));
        out.dec_inputs
            .extend(r.decoder_input_tokens.iter().map(|&x| x as usize));
        out.targets
            .extend(r.decoder_target_tokens.iter().map(|&x| x as usize));
        out.weights
            .extend(r.decoder_loss_weights.iter().map(|&x| x as f32));
        match &r.encoder_segment_ids {
            Some(seg) => out.enc_segments.extend(seg.iter().map(|&x| x as u32)),
            None => out
                .enc_segments
                .extend(r.encoder_input_tokens.iter().map(|&x| (x != 0) as u32)),
        }
        if let (Some(d), Some(seg)) = (out.dec_segments.as_mut(), &r.decoder_segment_ids) {
            d.extend(seg.iter().map(|&x| x as u32));
        }
    }
    out
}

/// The stream of training batches.
pub struct BatchStream {
    files: Vec<PathBuf>,
    cfg: DataConfig,
    converter: EncDecFeatureConverter,
    window: usize,
    epoch: u64,
    order: Vec<usize>,
    next_file: usize,
    pending: VecDeque<EncDecExample>,
    buffer: Vec<EncDecExample>,
    rng: ChaCha8Rng,
    to_pack: Vec<EncDecExample>,
    rows: VecDeque<EncDecRow>,
    finished: bool,
    /// Batches handed out so far.
    pub batches: u64,
    /// Examples read so far.
    pub examples: u64,
}

impl BatchStream {
    /// A stream over `files` (see [`shard_files`]).
    pub fn new(files: Vec<PathBuf>, cfg: DataConfig) -> Result<BatchStream> {
        if cfg.batch_size == 0 {
            return Err(TrainError::Config("batch size must be positive".into()));
        }
        let converter =
            EncDecFeatureConverter::new(cfg.inputs_length, cfg.targets_length, cfg.packing)
                .with_length_check(false);
        let window = cfg.inputs_length.max(cfg.targets_length).max(1);
        let mut s = BatchStream {
            files,
            converter,
            window,
            epoch: 0,
            order: Vec::new(),
            next_file: 0,
            pending: VecDeque::new(),
            buffer: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5348_5546_464c_4521),
            to_pack: Vec::new(),
            rows: VecDeque::new(),
            finished: false,
            batches: 0,
            examples: 0,
            cfg,
        };
        s.start_epoch();
        Ok(s)
    }

    /// The epoch being read (0-based).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn start_epoch(&mut self) {
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        if self.cfg.shuffle_buffer > 0 {
            let mut r = ChaCha8Rng::seed_from_u64(self.cfg.seed.wrapping_add(self.epoch));
            for i in (1..order.len()).rev() {
                let j = (r.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        self.order = order;
        self.next_file = 0;
    }

    /// The next example in file order, or `None` at the end of the data.
    fn next_raw(&mut self) -> Result<Option<EncDecExample>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            if self.next_file == self.order.len() {
                self.epoch += 1;
                if self.cfg.epochs.is_some_and(|e| self.epoch >= e) {
                    return Ok(None);
                }
                if self.examples == 0 {
                    return Err(TrainError::Data(
                        "the training shards hold no examples".into(),
                    ));
                }
                self.start_epoch();
            }
            let path = &self.files[self.order[self.next_file]];
            self.next_file += 1;
            let (examples, _) = read_example_shard(path)?;
            self.pending.extend(
                examples
                    .into_iter()
                    .map(|e| EncDecExample::new(e.inputs, e.targets)),
            );
        }
    }

    /// The next example after the shuffle buffer.
    fn next_example(&mut self) -> Result<Option<EncDecExample>> {
        let n = self.cfg.shuffle_buffer;
        if n == 0 {
            let e = self.next_raw()?;
            self.examples += e.is_some() as u64;
            return Ok(e);
        }
        while self.buffer.len() < n {
            match self.next_raw()? {
                Some(e) => {
                    self.examples += 1;
                    self.buffer.push(e)
                }
                None => break,
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let i = (self.rng.next_u64() % self.buffer.len() as u64) as usize;
        Ok(Some(self.buffer.swap_remove(i)))
    }

    /// The next batch, or `None` when the data (with `epochs`) is exhausted.
    /// A last partial batch is dropped unless `keep_partial`.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        while self.rows.len() < self.cfg.batch_size && !self.finished {
            // one packing window at a time, as seqio
            while self.to_pack.len() < self.window {
                match self.next_example()? {
                    Some(e) => self.to_pack.push(e),
                    None => {
                        self.finished = true;
                        break;
                    }
                }
            }
            let rows = self
                .converter
                .convert(&self.to_pack)
                .map_err(|e| TrainError::Data(e.to_string()))?;
            self.to_pack.clear();
            self.rows.extend(rows);
        }
        if self.rows.is_empty() || (self.rows.len() < self.cfg.batch_size && !self.cfg.keep_partial)
        {
            return Ok(None);
        }
        let n = self.cfg.batch_size.min(self.rows.len());
        let rows: Vec<EncDecRow> = self.rows.drain(..n).collect();
        self.batches += 1;
        Ok(Some(rows_to_batch(&rows)))
    }

    /// Skips `n` batches (to resume).
    pub fn skip(&mut self, n: u64) -> Result<()> {
        for _ in 0..n {
            if self.next_batch()?.is_none() {
                return Err(TrainError::Data(
                    "the data ended before the resume position".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Batches read, shuffled and packed on a background thread while the
/// model trains on the ones before: the same batches, in the same order, as
/// the [`BatchStream`] it wraps. At most `depth` batches wait.
pub struct Prefetch {
    rx: Option<std::sync::mpsc::Receiver<Result<Option<Batch>>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// What [`Self::peek`] received and [`Self::next_batch`] hands out.
    peeked: Option<Result<Option<Batch>>>,
    ended: bool,
    /// Batches handed out so far (with those the stream had handed out
    /// before it was wrapped).
    pub batches: u64,
}

impl Prefetch {
    /// Reads `stream` ahead, `depth` (≥ 1) batches at most.
    pub fn new(mut stream: BatchStream, depth: usize) -> Prefetch {
        let batches = stream.batches;
        let (tx, rx) = std::sync::mpsc::sync_channel(depth.max(1));
        let reader = std::thread::Builder::new()
            .name("t5mix-batches".into())
            .spawn(move || loop {
                let next = stream.next_batch();
                let last = !matches!(next, Ok(Some(_)));
                // a send fails when the trainer has dropped its end
                if tx.send(next).is_err() || last {
                    break;
                }
            })
            .ok();
        Prefetch {
            rx: Some(rx),
            reader,
            peeked: None,
            ended: false,
            batches,
        }
    }

    /// The next batch, or `None` when the data is exhausted (as
    /// [`BatchStream::next_batch`]).
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.ended {
            return Ok(None);
        }
        let got = self.peeked.take().unwrap_or_else(|| self.receive());
        match &got {
            Ok(Some(_)) => self.batches += 1,
            _ => self.ended = true,
        }
        got
    }
}

impl Prefetch {
    fn receive(&self) -> Result<Option<Batch>> {
        match &self.rx {
            Some(rx) => rx.recv().unwrap_or_else(|_| {
                Err(TrainError::Data(
                    "the batch reader thread stopped unexpectedly".into(),
                ))
            }),
            None => Err(TrainError::Data("no batch reader thread".into())),
        }
    }

    /// The batch [`Self::next_batch`] hands out next, not yet counted as
    /// handed out; None at the end of the data or on an error (which
    /// `next_batch` then returns).
    pub fn peek(&mut self) -> Option<&Batch> {
        if self.ended {
            return None;
        }
        if self.peeked.is_none() {
            self.peeked = Some(self.receive());
        }
        match &self.peeked {
            Some(Ok(Some(b))) => Some(b),
            _ => None,
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // the reader's next send fails, so it stops
        self.rx.take();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
