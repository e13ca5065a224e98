//! t5mix trainer: the T5 encoder-decoder in dfdx, the shard reader and
//! batcher, the optimizers and schedules, checkpoints and evaluation.

/// Compiles each function for several SIMD levels and picks one at run
/// time (`multiversion`): AVX-512 (F, BW, CD, DQ, VL), AVX2 + FMA, SSE4.2
/// and the baseline; NEON on aarch64. multiversion's own `"simd"` preset
/// leaves AVX-512 out (it was unstable in Rust when the preset was made).
/// The default x86-64 target has only SSE2, so element-wise loops gain
/// several times from this; no value depends on the level as long as the
/// loop is the same IEEE operations in the same order.
macro_rules! simd_fns {
    ($($(#[$m:meta])* $v:vis fn $name:ident $args:tt $(-> $ret:ty)? $body:block)*) => {
        $(
            $(#[$m])*
            #[multiversion::multiversion(targets(
                "x86_64+avx512f+avx512bw+avx512cd+avx512dq+avx512vl",
                "x86_64+avx2+fma",
                "x86_64+sse4.2",
                "aarch64+neon",
            ))]
            $v fn $name $args $(-> $ret)? $body
        )*
    };
}

pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod tensorboard;
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
/// Process-wide and idempotent; called by [`Runtime::install`]. Does
/// nothing on other C libraries.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
    ZERO_IN_PARALLEL.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`ParallelZeroing`] zero-fills on the rayon pool (off until
/// [`reuse_freed_memory`]: the rayon pool may not be configured earlier).
static ZERO_IN_PARALLEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Zero-filled blocks of at least this many bytes are filled in parallel.
const PARALLEL_ZEROING_BYTES: usize = 1 << 20;

/// The system allocator, except that large zero-filled blocks are filled on
/// the rayon pool. dfdx zero-fills a gradient buffer for every tensor of a
/// backward pass on the calling thread (~530 MB per `tiny` step, glibc's
/// `calloc` must clear reused memory): with this the other cores share it.
/// For binaries: `#[global_allocator] static A: ParallelZeroing = ParallelZeroing;`.
/// It only starts once [`reuse_freed_memory`] ran, so that it never
/// initialises the global rayon pool before the program configured it.
pub struct ParallelZeroing;

// SAFETY: every block comes from the system allocator; `alloc_zeroed`
// clears all `size` bytes of the block before returning it.
unsafe impl std::alloc::GlobalAlloc for ParallelZeroing {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        std::alloc::System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        std::alloc::System.realloc(ptr, layout, size)
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let size = layout.size();
        if size < PARALLEL_ZEROING_BYTES
            || !ZERO_IN_PARALLEL.load(std::sync::atomic::Ordering::Relaxed)
        {
            return std::alloc::System.alloc_zeroed(layout);
        }
        let ptr = std::alloc::System.alloc(layout);
        if ptr.is_null() {
            return ptr;
        }
        clear_in_parallel(ptr, size);
        ptr
    }
}

/// Zero-fills `size` bytes from `ptr` in parts of 256 KiB on the rayon pool.
///
/// # Safety
/// `ptr` is valid for writes of `size` bytes.
unsafe fn clear_in_parallel(ptr: *mut u8, size: usize) {
    use rayon::prelude::*;
    // the address as an integer, shared by the tasks (each clears its own part)
    let addr = ptr as usize;
    const PART: usize = 256 << 10;
    (0..size.div_ceil(PART)).into_par_iter().for_each(|i| {
        let start = i * PART;
        // SAFETY: part i of the `size` bytes
        unsafe { std::ptr::write_bytes((addr as *mut u8).add(start), 0, PART.min(size - start)) }
    });
}

/// The trainer's process-wide settings, installed once at start-up before
/// any work (the `t5mix` binary does it right after parsing its arguments;
/// a program using the library calls [`Runtime::install`] itself — without
/// it training is correct, only slower on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runtime {
    /// The fused multi-threaded CPU kernels ([`kernels`]); off, the CPU runs
    /// the dfdx compositions other devices run (the tests compare the two).
    pub fused_kernels: bool,
    /// On the CPU, glibc keeps freed buffers for the next step and large
    /// zero-filled blocks are cleared on the rayon pool
    /// ([`reuse_freed_memory`], [`ParallelZeroing`]); on the GPU, dfdx's
    /// allocation cache (device allocations are expensive).
    pub reuse_memory: bool,
    /// On the CPU, subnormal floats (below 1.2e-38) are read and written as
    /// zero (x86's MXCSR flush-to-zero and denormals-are-zero, aarch64's
    /// FPCR.FZ) on the calling thread and every rayon worker. Padded
    /// supervised batches fill products with subnormals, which the CPU
    /// handles in microcode: the micro model's step on `demo_reviews`
    /// (batch 8, 128/8) took 258 ms with them and 20 ms without.
    pub flush_denormals: bool,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            fused_kernels: true,
            reuse_memory: true,
            flush_denormals: true,
        }
    }
}

/// The largest `|a[i] − b[i]|`, for comparisons in tests: NaN when any
/// difference is NaN (so that `worst <= tol` fails; `f32::max` would skip it).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        if d.is_nan() {
            return f32::NAN;
        }
        worst = worst.max(d);
    }
    worst
}

/// `‖a − b‖ / ‖b‖` (sums in f64), for comparisons in tests of rounded
/// arithmetic (TF32, bf16), where single values may move by more than the
/// rounding (a ReLU's input near 0 crossing it) but the whole cannot: NaN
/// when any value is NaN.
pub fn relative_l2_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    let (mut diff, mut norm) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        diff += (*x as f64 - *y as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    (diff / norm).sqrt()
}

/// Sets flush-to-zero and denormals-are-zero on this thread (threads it
/// starts later inherit the setting).
pub fn flush_denormals_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only the FTZ (bit 15) and DAZ (bit 6) bits of MXCSR change.
    #[allow(deprecated)]
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | (1 << 15) | (1 << 6));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: only FPCR.FZ (bit 24) changes.
    unsafe {
        let mut fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr | (1 << 24));
    }
}

impl Runtime {
    /// Applies the settings to the process and `dev`. On the CPU dfdx's
    /// allocation cache stays off: the fused kernels hand dfdx buffers that
    /// did not come from its cache, so with it on it grew by ~300 MB per
    /// `tiny` step (a quarter of the step in the kernel zeroing fresh
    /// pages); without it the step took 0.80 s instead of 1.2–1.4 s and
    /// memory stayed flat at ~1 GB.
    pub fn install(self, dev: &Dev) {
        kernels::set_fused_kernels(self.fused_kernels);
        if self.flush_denormals && !cfg!(feature = "cuda") {
            flush_denormals_on_this_thread();
            rayon::broadcast(|_| flush_denormals_on_this_thread());
        }
        if !self.reuse_memory {
            return;
        }
        if cfg!(feature = "cuda") {
            dfdx::tensor::Cache::enable_cache(dev);
        } else {
            let _ = dev;
            reuse_freed_memory();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    /// Parallel clearing reaches every byte, whatever the size; large
    /// zero-filled blocks are all zeros.
    #[test]
    fn parallel_zeroing_clears_every_byte() {
        for size in [1, (256 << 10) - 1, 256 << 10, (3 << 20) + 123] {
            let mut dirty = vec![0xABu8; size + 1];
            // SAFETY: `dirty` holds more than `size` bytes
            unsafe { super::clear_in_parallel(dirty.as_mut_ptr(), size) };
            assert!(dirty[..size].iter().all(|&b| b == 0), "size {size}");
            assert_eq!(dirty[size], 0xAB, "size {size}: cleared past the end");
        }
        super::reuse_freed_memory();
        let a = super::ParallelZeroing;
        for size in [super::PARALLEL_ZEROING_BYTES, (3 << 20) + 123, 1000] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a block of `layout`, read inside its size
            unsafe {
                let p = a.alloc_zeroed(layout);
                let bytes = std::slice::from_raw_parts(p, size);
                assert!(bytes.iter().all(|&b| b == 0), "size {size}");
                a.dealloc(p, layout);
            }
        }
    }
}
