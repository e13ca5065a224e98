//! Sets `cfg(t5mix_shared_data)`, `cfg(t5mix_py_*)` (pyarrow, moto),
//! `cfg(t5mix_slurm)`, `cfg(t5mix_spm_trainer)` and `cfg(t5mix_gpu)` for the
//! end-to-end tests (build/shared_data.rs), and `cfg(t5mix_cuda_standin)`.
include!("build/shared_data.rs");

fn main() {
    shared_data_cfg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    python_module_cfg("t5mix_py_pyarrow", "pyarrow", None);
    python_module_cfg("t5mix_py_moto", "moto", None);
    slurm_cfg();
    spm_trainer_cfg();
    gpu_cfg();
    cuda_standin_cfg();
}

/// `cfg(t5mix_cuda_standin)` and `T5MIX_CUDA_STANDIN_DIR` (its folder) when
/// the trainer's build script built the CPU stand-in of CUDA (passed on
/// through the trainer's `links`): the tests of `t5mix train --device
/// cuda` run the binary on it.
fn cuda_standin_cfg() {
    println!("cargo:rustc-check-cfg=cfg(t5mix_cuda_standin)");
    if let Some(dir) = std::env::var_os("DEP_T5MIX_TRAINER_STANDIN_DIR") {
        println!("cargo:rustc-cfg=t5mix_cuda_standin");
        println!(
            "cargo:rustc-env=T5MIX_CUDA_STANDIN_DIR={}",
            dir.to_string_lossy()
        );
    }
}
