//! A very small T5 and a two-example batch, shared by the gradient tests.
#![allow(dead_code)] // each test file uses a different subset

use t5mix_trainer::model::{Batch, T5};
use t5mix_trainer::{Dev, T5Config};

/// A 16-wide, 2-head T5 over a 96-id vocabulary: `relu` is v1.0-style
/// (tied), anything else gated-GELU (untied). `buckets`: (number, max distance).
pub fn small_model(ff: &str, seed: u64, buckets: Option<(usize, usize)>) -> T5<Dev> {
    let mut cfg = T5Config::named("micro").unwrap();
    cfg.vocab_size = 96;
    cfg.d_model = 16;
    cfg.d_kv = 4;
    cfg.d_ff = 24;
    cfg.num_heads = 2;
    cfg.feed_forward_proj = ff.into();
    cfg.tie_word_embeddings = ff == "relu";
    if let Some((n, max)) = buckets {
        cfg.relative_attention_num_buckets = n;
        cfg.relative_attention_max_distance = max;
    }
    T5::new(cfg, &Dev::default(), Some(seed))
}

/// Two examples of different lengths (padding in both features).
pub fn two_examples() -> Batch {
    Batch::from_pairs(
        &[
            (vec![5, 9, 11, 40, 2, 77, 1], vec![8, 3, 1]),
            (vec![21, 13, 1], vec![4, 50, 61, 1]),
        ],
        0,
    )
}

/// Readies the GPU of the GPU tests: the real one where a CUDA driver is
/// there (the device machine), else the CPU stand-in the build script made
/// (`trainer/cuda/standin/`). Every test of a file with GPU tests calls it
/// first, so that nothing in the process loads CUDA's libraries before it.
pub fn gpu() {
    use std::sync::OnceLock;
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        // SAFETY: only tries to open the driver library by its names.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            return;
        }
        #[cfg(t5mix_cuda_standin)]
        t5mix_trainer::device::use_cpu_standin(std::path::Path::new(env!(
            "T5MIX_CUDA_STANDIN_DIR"
        )))
        .expect("the CPU stand-in of CUDA");
    });
}
