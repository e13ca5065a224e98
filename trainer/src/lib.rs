//! t5mix trainer: the T5 encoder-decoder in dfdx, the shard reader and
//! batcher, the optimizers and schedules, checkpoints and evaluation.

pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod train;
pub mod weights;

pub use config::T5Config;
pub use error::{Result, TrainError};
pub use model::{Batch, Dropout, LossConfig, LossNormalization, T5};

/// The compute device: the CPU, or an NVIDIA GPU with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub type Dev = dfdx::tensor::Cpu;
/// The compute device: the CPU, or an NVIDIA GPU with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type Dev = dfdx::tensor::Cuda;
