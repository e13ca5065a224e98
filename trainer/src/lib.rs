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

/// Lets glibc keep freed tensor buffers for reuse. A training step allocates
/// and frees the same large buffers every step (activations, gradients,
/// host copies for the optimizer); by default glibc maps each buffer above
/// 128 KiB afresh and unmaps it when freed, so every step pays page faults
/// and TLB-shootdown interrupts (~8% of a `tiny` CPU step, measured with
/// perf). Raising the mmap threshold to glibc's maximum (32 MiB) and turning
/// off heap trimming keeps them in the heap. Process-wide; called by
/// [`train::Trainer::new`]. Does nothing on other C libraries.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
