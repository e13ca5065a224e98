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
/// logits, host copies for the optimizer); by default glibc maps each buffer
/// above 128 KiB afresh and unmaps it when freed, so every step pays page
/// faults and TLB-shootdown interrupts (perf on the `tiny` step: ~8% of its
/// CPU time). This turns off mmap for the main heap (other threads' arenas
/// still map what does not fit them) and heap trimming, so freed buffers
/// stay in the process for the next step (`--bench train_step -- tiny`:
/// 1.54 → 1.19 s when it was added). Memory is then never handed back to
/// the system while the process runs (its peak stays reserved).
/// Process-wide and idempotent; called by [`setup_device`] and by
/// [`train::Trainer::new`] (for library users who skip `setup_device`).
/// Does nothing on other C libraries.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

/// Prepares the device for training or evaluation. On the GPU, dfdx's
/// allocation cache is turned on (device allocations are expensive). On the
/// CPU it stays off and glibc keeps freed buffers instead
/// ([`reuse_freed_memory`]): the fused kernels hand dfdx buffers that did not
/// come from its cache, so with the cache on it grew by ~300 MB per `tiny`
/// step (perf: a quarter of the step's CPU time in the kernel zeroing fresh
/// pages); without it the step took 0.80 s instead of 1.2–1.4 s and memory
/// stayed flat at ~1 GB.
pub fn setup_device(dev: &Dev) {
    if cfg!(feature = "cuda") {
        dfdx::tensor::Cache::enable_cache(dev);
    } else {
        let _ = dev;
        reuse_freed_memory();
    }
}
