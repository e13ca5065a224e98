//! t5mix trainer: the T5 encoder-decoder, shard reader, optimizer,
//! checkpoints and evaluation.
//!
//! Empty until the trainer issue lands; it reads the Parquet shards that
//! `t5mix build` writes.
